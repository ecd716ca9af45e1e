"""The release's lighting pipeline (``docs/ORIGINAL.md`` section 3).

Per vertex: ambient + diffuse + specular light from a point light and a viewer at
``(0, 0, 5)`` in a normalised copy of the vertex coordinates; the normals come from
the input vertices. With white light colours the three channels are equal.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import (Sim3DRInputError, _check_alpha, _check_depth, _check_triangles,
               _check_vertices, _default_threads, _native, _sim3dr, rasterize,
               resolve_num_threads)

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


# Parameter ranges: with them every light value is finite (then clipped to [0, 1]).


def _vec3(name: str, value: Sequence[float], unit: bool = False) -> tuple[float, float, float]:
    """3 numbers, finite in float32 (the C++ type); in [0, 1] for colours."""
    what = "3 numbers in [0, 1]" if unit else "3 finite numbers (float32 range)"
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != (3,) or not np.isfinite(a).all() \
            or (np.abs(a) > np.finfo(np.float32).max).any() \
            or (unit and ((a < 0) | (a > 1)).any()):
        raise Sim3DRInputError(f"{name}: expected {what}, got {value!r}")
    return tuple(float(x) for x in a)


_F32_MAX = float(np.finfo(np.float32).max)


def _real(value) -> float:
    """A real number as float (NaN for anything else: strings, bools, None)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return float("nan")
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return float("inf")


def _intensity(name: str, value) -> float:
    x = _real(value)
    if not 0.0 <= x <= 1.0:
        raise Sim3DRInputError(f"{name}: expected a number in [0, 1], got {value!r}")
    return x


def _exponent(value) -> float:
    """A whole number >= 0: ``(e * r) ** exp`` of a negative product is NaN for fractional
    exponents and infinite at 0 for negative ones."""
    x = _real(value)
    if not (0.0 <= x <= _F32_MAX and x == int(x)):
        raise Sim3DRInputError(f"specular_exp: expected a whole number >= 0, got {value!r}")
    return x


def _normals(normals, shape) -> np.ndarray:
    n = np.asarray(normals)
    if n.dtype.kind not in "biuf" or n.shape != shape:
        raise Sim3DRInputError(
            f"normals: expected a numeric array of shape {shape} to match vertices, got "
            f"{n.dtype} with shape {n.shape}")
    n = np.ascontiguousarray(n, dtype=_F)
    length = np.sqrt(np.einsum("ij,ij->i", n.astype(np.float64), n.astype(np.float64)))
    if not np.isfinite(length).all() or (length > 1.001).any():
        raise Sim3DRInputError("normals: expected unit vectors (or zero rows) such as "
                               "get_normal returns")
    return n


def light_colors(vertices, triangles, normals: Optional[np.ndarray] = None,
                 intensity_ambient: float = 0.3, intensity_directional: float = 0.6,
                 intensity_specular: float = 0.1, specular_exp: float = 5,
                 color_ambient: Sequence[float] = (1.0, 1.0, 1.0),
                 color_directional: Sequence[float] = (1.0, 1.0, 1.0),
                 light_pos: Sequence[float] = (0.0, 0.0, 5.0),
                 view_pos: Sequence[float] = (0.0, 0.0, 5.0)) -> np.ndarray:
    """Per-vertex light, ``(N, 3)`` float32 in [0, 1] (release defaults).

    Intensities and colours are in [0, 1], ``specular_exp`` a whole number >= 0, positions
    finite; otherwise :class:`Sim3DR.Sim3DRInputError`. ``normals`` (unit vectors or zero
    rows) may be passed to skip recomputing :func:`Sim3DR.get_normal`. The specular
    term keeps the release's quirk: ``sum((e * r) ** exp)`` over xyz, not
    ``<e, r> ** exp``; it is clipped to [0, 1] where ``cos != 0`` and 0 elsewhere.
    Computed in one C++ pass (``Sim3DR/src/lighting.cpp``); the numpy formulation,
    :func:`Sim3DR.reference.light_colors_reference`, is what the tests hold it to."""
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    args = _light_arguments(intensity_ambient, intensity_directional, intensity_specular,
                            specular_exp, color_ambient, color_directional, light_pos,
                            view_pos)
    light = np.empty_like(v)
    if normals is None:  # normals and light in one C++ pass (normals as get_normal)
        _native("light_colors", _sim3dr.light_colors, v, t, light, *args, _default_threads())
    else:
        normal = _normals(normals, v.shape)
        _native("light_colors", _sim3dr.light_vertices, v, normal, light, *args,
                _default_threads())
    return light


def _light_arguments(intensity_ambient=0.3, intensity_directional=0.6,
                     intensity_specular=0.1, specular_exp=5, color_ambient=(1.0, 1.0, 1.0),
                     color_directional=(1.0, 1.0, 1.0), light_pos=(0.0, 0.0, 5.0),
                     view_pos=(0.0, 0.0, 5.0)) -> tuple:
    """Checked lighting parameters, in the order of the C++ bindings' arguments."""
    return (_intensity("intensity_ambient", intensity_ambient),
            _intensity("intensity_directional", intensity_directional),
            _intensity("intensity_specular", intensity_specular), _exponent(specular_exp),
            _vec3("color_ambient", color_ambient, unit=True),
            _vec3("color_directional", color_directional, unit=True),
            _vec3("light_pos", light_pos), _vec3("view_pos", view_pos))


#: The checked release defaults (render_lit without light keywords).
_DEFAULT_LIGHT = _light_arguments()


def render_lit(vertices, triangles, background: np.ndarray, alpha: float = 1.0,
               depth_buffer: Optional[np.ndarray] = None, num_threads: Optional[int] = None,
               **light) -> np.ndarray:
    """The release's pipeline: per-vertex light (:func:`light_colors`, keyword overrides
    in ``light``) rasterised over a copy of the uint8 ``(H, W, 3)`` ``background``.
    Returns the new uint8 image; ``background`` is not modified.

    The same pixels as ``rasterize(vertices, triangles, light_colors(vertices, triangles,
    **light), background.copy(), alpha, depth_buffer, num_threads)``, computed in one C++
    pass (the inputs are checked once; with ``alpha == 1`` the lighting runs alongside the
    rasterisation of depth and each pixel is coloured once, from the triangle that won it)."""
    bg = np.asarray(background)
    if bg.dtype != np.uint8 or bg.ndim != 3 or bg.shape[2] != 3:
        raise Sim3DRInputError(
            f"background: expected a uint8 (H, W, 3) image, got {bg.dtype} with shape "
            f"{bg.shape}")
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    if "normals" in light:  # precomputed normals: the two steps
        colors = light_colors(v, t, **light)
        image = np.array(bg, dtype=np.uint8, order="C", copy=True)
        return rasterize(v, t, colors, image, alpha=alpha, depth_buffer=depth_buffer,
                         num_threads=num_threads)
    unknown = sorted(set(light) - set(LIGHT_DEFAULTS))
    if unknown:  # as the two-step pipeline's light_colors(**light) refused them
        raise TypeError(f"light_colors() got an unexpected keyword argument {unknown[0]!r}")
    args = _light_arguments(**light) if light else _DEFAULT_LIGHT
    # The checks in the order of the two steps: threads, alpha, depth buffer.
    n = resolve_num_threads(num_threads)
    a = _check_alpha(alpha)
    h, w = bg.shape[:2]
    if not (h and w):
        return np.array(bg, dtype=np.uint8, order="C", copy=True)
    depth = None if depth_buffer is None else _check_depth(depth_buffer, h, w)
    # the C++ pass copies the background into the new image band by band
    image = np.empty((h, w, 3), np.uint8)
    _native("render_lit", _sim3dr.render_lit_u8, v, t, np.ascontiguousarray(bg), image, depth,
            a, n, *args)
    return image


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
