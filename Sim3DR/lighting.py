"""The release's lighting pipeline (``docs/ORIGINAL.md`` section 3), vectorised numpy.

Per vertex: ambient + diffuse + specular light from a point light and a viewer at
``(0, 0, 5)`` in a normalised copy of the vertex coordinates; the normals come from
the input vertices. With white light colours the three channels are equal.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import (Sim3DRInputError, _check_alpha, _check_triangles, _check_vertices,
               get_normal, rasterize)

__all__ = ["LIGHT_DEFAULTS", "light_colors", "normalize_vertices", "overlay", "render_lit"]

_F = np.float32

#: The release's lighting parameters.
LIGHT_DEFAULTS = dict(
    intensity_ambient=0.3,
    intensity_directional=0.6,
    intensity_specular=0.1,
    specular_exp=5,
    color_ambient=(1.0, 1.0, 1.0),
    color_directional=(1.0, 1.0, 1.0),
    light_pos=(0.0, 0.0, 5.0),
    view_pos=(0.0, 0.0, 5.0),
)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows divided by their length (rows of length 0 become 0 rather than NaN)."""
    n = np.sqrt(np.sum(a * a, axis=1, keepdims=True))
    return np.divide(a, n, out=np.zeros_like(a), where=n > 0)


def normalize_vertices(vertices: np.ndarray) -> np.ndarray:
    """The release's normalised copy used for light directions: subtract the per-axis
    minimum, divide by the single largest coordinate (skipped when it is 0), multiply by
    2, subtract half of each axis's own maximum."""
    v = np.array(vertices, dtype=_F, copy=True)
    v -= v.min(axis=0, keepdims=True)
    top = v.max() if v.size else _F(0)
    if top > 0:
        v /= top
    v *= _F(2)
    if v.size:
        v -= v.max(axis=0, keepdims=True) / _F(2)
    return v


def light_colors(vertices, triangles, normals: Optional[np.ndarray] = None,
                 intensity_ambient: float = 0.3, intensity_directional: float = 0.6,
                 intensity_specular: float = 0.1, specular_exp: float = 5,
                 color_ambient: Sequence[float] = (1.0, 1.0, 1.0),
                 color_directional: Sequence[float] = (1.0, 1.0, 1.0),
                 light_pos: Sequence[float] = (0.0, 0.0, 5.0),
                 view_pos: Sequence[float] = (0.0, 0.0, 5.0)) -> np.ndarray:
    """Per-vertex light, ``(N, 3)`` float32 in [0, 1] (release defaults).

    ``normals`` may be passed to skip recomputing :func:`Sim3DR.get_normal`. The specular
    term keeps the release's quirk: ``sum((e * r) ** exp)`` over xyz, not
    ``<e, r> ** exp``; it is clipped to [0, 1] where ``cos != 0`` and 0 elsewhere."""
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    if normals is None:
        normals = get_normal(v, t)
    normal = np.asarray(normals, dtype=_F)
    if normal.shape != v.shape:
        raise Sim3DRInputError(
            f"normals: expected shape {v.shape} to match vertices, got {normal.shape}")
    light = np.zeros_like(v)
    if intensity_ambient > 0:
        light += _F(intensity_ambient) * np.asarray(color_ambient, dtype=_F)[None, :]
    if intensity_directional > 0:
        vn = normalize_vertices(v)
        color_d = np.asarray(color_directional, dtype=_F)[None, :]
        direction = _unit_rows(np.asarray(light_pos, dtype=_F)[None, :] - vn)
        cos = np.sum(normal * direction, axis=1, keepdims=True)
        light += _F(intensity_directional) * (color_d * np.clip(cos, 0, 1))
        if intensity_specular > 0:
            to_view = _unit_rows(np.asarray(view_pos, dtype=_F)[None, :] - vn)
            reflection = _F(2) * cos * normal - direction
            spec = np.sum((to_view * reflection) ** _F(specular_exp), axis=1, keepdims=True)
            spec = np.where(cos != 0, np.clip(spec, 0, 1), _F(0))
            light += _F(intensity_specular) * color_d * spec
    return np.clip(light, 0, 1).astype(_F, copy=False)


def render_lit(vertices, triangles, background: np.ndarray, alpha: float = 1.0,
               depth_buffer: Optional[np.ndarray] = None, num_threads: Optional[int] = None,
               **light) -> np.ndarray:
    """The release's pipeline: per-vertex light (:func:`light_colors`, keyword overrides
    in ``light``) rasterised over a copy of the uint8 ``(H, W, 3)`` ``background``.
    Returns the new uint8 image; ``background`` is not modified."""
    bg = np.asarray(background)
    if bg.dtype != np.uint8 or bg.ndim != 3 or bg.shape[2] != 3:
        raise Sim3DRInputError(
            f"background: expected a uint8 (H, W, 3) image, got {bg.dtype} with shape "
            f"{bg.shape}")
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    colors = light_colors(v, t, **light)
    image = np.array(bg, dtype=np.uint8, order="C", copy=True)
    return rasterize(v, t, colors, image, alpha=alpha, depth_buffer=depth_buffer,
                     num_threads=num_threads)


def overlay(image: np.ndarray, rendered: np.ndarray, alpha: float) -> np.ndarray:
    """Alpha blend like OpenCV's ``addWeighted(image, 1 - alpha, rendered, alpha, 0)``:
    ``round(image * (1 - alpha) + rendered * alpha)`` in float32, saturated to uint8
    (round half to even). Both inputs uint8 of the same shape; returns a new array."""
    a = _check_alpha(alpha)
    img, ren = np.asarray(image), np.asarray(rendered)
    if img.dtype != np.uint8 or ren.dtype != np.uint8 or img.shape != ren.shape:
        raise Sim3DRInputError(
            f"overlay: expected two uint8 images of the same shape, got {img.dtype} "
            f"{img.shape} and {ren.dtype} {ren.shape}")
    mix = img.astype(_F) * _F(1 - a) + ren.astype(_F) * _F(a)
    return np.clip(np.rint(mix), 0, 255).astype(np.uint8)
