"""Reference implementations, for tests and the benchmark.

* :func:`rasterize_reference` / :func:`buffers_reference` / :func:`normals_reference`:
  pure numpy, written independently of the C++ core from the rules in
  ``docs/ORIGINAL.md`` section 3, with the same float32 operations in the same order, so
  the C++ results must equal them bit for bit. Slow (a Python loop over triangles): use
  on small meshes only.
* :func:`rasterize_baseline`: the straightforward single-threaded C++ loop (full
  barycentric computation at every candidate pixel), the benchmark's baseline.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import (DEPTH_INIT, _check_alpha, _check_colors, _check_depth, _check_image,
               _check_triangles, _check_vertices, _draw_arguments, _sim3dr)

_F = np.float32


def normals_reference(vertices, triangles) -> np.ndarray:
    """Area-weighted unit vertex normals in float64 numpy, returned as float32."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    acc = np.zeros_like(v)
    for k in range(3):
        np.add.at(acc, t[:, k], n)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    out = np.divide(acc, length, out=np.zeros_like(acc), where=length > 0)
    return out.astype(np.float32)


def _pixels(p: np.ndarray, h: int, w: int):
    """Candidate pixel grid floor(min)..ceil(max) clipped, or None when empty."""
    x0 = max(int(np.floor(p[:, 0].min())), 0)
    x1 = min(int(np.ceil(p[:, 0].max())), w - 1)
    y0 = max(int(np.floor(p[:, 1].min())), 0)
    y1 = min(int(np.ceil(p[:, 1].max())), h - 1)
    if x0 > x1 or y0 > y1:
        return None
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    return xs.ravel(), ys.ravel()


def _triangle(p: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Barycentric (u, v) and the inside mask for pixels (xs, ys); None if degenerate."""
    v0x, v0y = p[2, 0] - p[0, 0], p[2, 1] - p[0, 1]
    v1x, v1y = p[1, 0] - p[0, 0], p[1, 1] - p[0, 1]
    d00 = v0x * v0x + v0y * v0y
    d01 = v0x * v1x + v0y * v1y
    d11 = v1x * v1x + v1y * v1y
    den = d00 * d11 - d01 * d01
    if den == 0:
        return None
    inv = _F(1) / den
    v2x = xs.astype(_F) - p[0, 0]
    v2y = ys.astype(_F) - p[0, 1]
    d02 = v0x * v2x + v0y * v2y
    d12 = v1x * v2x + v1y * v2y
    u = (d11 * d02 - d01 * d12) * inv
    v = (d00 * d12 - d01 * d02) * inv
    inside = (u >= 0) & (v >= 0) & (u + v < 1)
    return u, v, inside


def _raster(vertices: np.ndarray, triangles: np.ndarray, h: int, w: int,
            depth: np.ndarray, draw) -> None:
    for ti, tri in enumerate(triangles):
        p = vertices[tri]  # (3, 3) float32: rows p0, p1, p2
        grid = _pixels(p, h, w)
        if grid is None:
            continue
        res = _triangle(p, *grid)
        if res is None:
            continue
        u, v, inside = res
        xs, ys = grid[0][inside], grid[1][inside]
        u, v = u[inside], v[inside]
        w0 = _F(1) - u - v
        z = w0 * p[0, 2] + v * p[1, 2] + u * p[2, 2]
        win = z > depth[ys, xs]
        xs, ys = xs[win], ys[win]
        depth[ys, xs] = z[win]
        draw(ti, tri, ys, xs, w0[win], v[win], u[win])


def rasterize_reference(vertices, triangles, colors, image: np.ndarray, alpha: float = 1.0,
                        depth_buffer: Optional[np.ndarray] = None) -> np.ndarray:
    """Numpy twin of :func:`Sim3DR.rasterize` (in place, returns ``image``)."""
    img = _check_image(image)
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    c = _check_colors(colors, v.shape[0], img.shape[2])
    a = _F(_check_alpha(alpha))
    h, w = img.shape[:2]
    d = _check_depth(depth_buffer, h, w)
    keep = _F(1) - a

    def draw(ti, tri, ys, xs, w0, w1, w2):
        col = (w0[:, None] * c[tri[0]] + w1[:, None] * c[tri[1]]
               + w2[:, None] * c[tri[2]])
        old = img[ys, xs]
        if img.dtype == np.uint8:
            val = keep * old.astype(_F) + (a * _F(255)) * col
            img[ys, xs] = np.clip(val, 0, 255).astype(np.uint8)
        else:
            img[ys, xs] = keep * old + a * col

    _raster(v, t, h, w, d, draw)
    return image


def buffers_reference(vertices, triangles, height: int, width: int,
                      background: float = -np.inf) -> Tuple[np.ndarray, np.ndarray]:
    """Numpy twin of :func:`Sim3DR.rasterize_buffers` (fresh buffers)."""
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    depth = np.full((height, width), DEPTH_INIT, dtype=np.float32)
    index = np.full((height, width), -1, dtype=np.int32)

    def draw(ti, tri, ys, xs, *_):
        index[ys, xs] = ti

    _raster(v, t, height, width, depth, draw)
    depth[index < 0] = _F(background)
    return depth, index


def rasterize_baseline(vertices, triangles, colors, image: np.ndarray, alpha: float = 1.0,
                       depth_buffer: Optional[np.ndarray] = None) -> np.ndarray:
    """The plain single-threaded C++ loop (benchmark baseline); same results as
    :func:`Sim3DR.rasterize`."""
    args = _draw_arguments(vertices, triangles, colors, image, alpha, depth_buffer)
    if args is not None:
        draw = _sim3dr.rasterize_baseline_u8 if args[3].dtype == np.uint8 else _sim3dr.rasterize_baseline_f32
        draw(*args)
    return image


# --------------------------------------------------------------------------- lighting


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows divided by their length (rows of length 0 become 0 rather than NaN)."""
    n = np.sqrt(np.sum(a * a, axis=1, keepdims=True))
    return np.divide(a, n, out=np.zeros_like(a), where=n > 0)


def normalize_vertices(vertices: np.ndarray) -> np.ndarray:
    """The release's normalised copy used for light directions: subtract the per-axis
    minimum, divide by the single largest coordinate (skipped when it is 0), multiply by
    2, subtract half of each axis's own maximum. In float64 (returned as float32): the
    extent of finite float32 vertices can overflow float32, and its inverse too."""
    v = np.array(vertices, dtype=np.float64, copy=True)
    v -= v.min(axis=0, keepdims=True)
    top = v.max() if v.size else 0.0
    if top > 0:
        v /= top
    v *= 2
    if v.size:
        v -= v.max(axis=0, keepdims=True) / 2
    return v.astype(_F)


def light_colors_reference(vertices, triangles, normals=None, intensity_ambient: float = 0.3,
                           intensity_directional: float = 0.6, intensity_specular: float = 0.1,
                           specular_exp: float = 5, color_ambient=(1.0, 1.0, 1.0),
                           color_directional=(1.0, 1.0, 1.0), light_pos=(0.0, 0.0, 5.0),
                           view_pos=(0.0, 0.0, 5.0)) -> np.ndarray:
    """The release's lighting in vectorised numpy float32, the reference for
    :func:`Sim3DR.lighting.light_colors` (the C++ pass) and the release-style benchmark."""
    v = np.ascontiguousarray(vertices, dtype=_F)
    # float32 like the C++ parameters: a positive double below 1e-45 is 0 there.
    intensity_ambient, intensity_directional, intensity_specular = (
        _F(intensity_ambient), _F(intensity_directional), _F(intensity_specular))
    normal = (np.asarray(normals, dtype=_F) if normals is not None
              else normals_reference(v, np.asarray(triangles)).astype(_F))
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
