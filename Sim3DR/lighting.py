"""The release's lighting pipeline (``docs/ORIGINAL.md`` section 3).

Per vertex: ambient + diffuse + specular light from a point light and a viewer at
``(0, 0, 5)`` in a normalised copy of the vertex coordinates; the normals come from
the input vertices. With white light colours the three channels are equal.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import (Sim3DRInputError, _check_alpha, _check_triangles, _check_vertices, _sim3dr,
               get_normal, rasterize)

__all__ = ["LIGHT_DEFAULTS", "light_colors", "overlay", "render_lit"]

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


def _vec3(name: str, value: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(value, dtype=np.float64)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise Sim3DRInputError(f"{name}: expected 3 finite numbers, got {value!r}")
    return tuple(float(x) for x in a)


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
    ``<e, r> ** exp``; it is clipped to [0, 1] where ``cos != 0`` and 0 elsewhere.
    Computed in one C++ pass (``Sim3DR/src/lighting.cpp``); the numpy formulation,
    :func:`Sim3DR.reference.light_colors_reference`, is what the tests hold it to."""
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    if normals is None:
        normals = get_normal(v, t)
    normal = np.asarray(normals, dtype=_F)
    if normal.shape != v.shape:
        raise Sim3DRInputError(
            f"normals: expected shape {v.shape} to match vertices, got {normal.shape}")
    light = np.empty_like(v)
    _sim3dr.light_vertices(v, np.ascontiguousarray(normal), light, intensity_ambient, intensity_directional,
                           intensity_specular, specular_exp, _vec3("color_ambient", color_ambient),
                           _vec3("color_directional", color_directional), _vec3("light_pos", light_pos),
                           _vec3("view_pos", view_pos))
    return light


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
