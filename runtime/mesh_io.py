"""Mesh and image writers: OBJ, binary PLY, depth maps and PNG (OpenCV). Every writer is
all-or-nothing: the file is written under a temporary name beside its target, then renamed.

Conventions:
* Vertices ``(N, 3)`` float, triangles ``(M, 3)`` 0-based int (written 1-based in OBJ).
* Vertex colours ``(N, 3)`` in RGB order: float in [0, 1] or uint8 in [0, 255].
* Images are BGR (OpenCV's order) like the rest of the project: :func:`write_png` takes
  BGR/BGRA and stores RGB/RGBA in the file; :func:`read_png` returns BGR/BGRA again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from runtime.atomic import replacing
from runtime.errors import InputError

__all__ = ["depth_to_u16", "format_g", "read_png", "write_depth", "write_obj", "write_ply", "write_png"]

PathLike = Union[str, Path]


# --------------------------------------------------------------------------- checks


def _vertices(vertices) -> np.ndarray:
    v = np.asarray(vertices)
    if v.dtype.kind not in "biuf" or v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"vertices: expected a numeric (N, 3) array, got {v.dtype} "
                         f"with shape {v.shape}")
    if not np.isfinite(v).all():
        raise InputError("vertices: contains NaN or infinite values")
    return v


def _triangles(triangles, nver: int) -> np.ndarray:
    t = np.asarray(triangles)
    if t.dtype.kind not in "iu" or t.ndim != 2 or t.shape[1] != 3:
        raise InputError(f"triangles: expected an integer (M, 3) array, got {t.dtype} "
                         f"with shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= nver):
        bad = int(t.min()) if t.min() < 0 else int(t.max())
        raise InputError(f"triangles: index {bad} out of range for {nver} vertices")
    return t if t.dtype in (np.int32, np.int64) else t.astype(np.int64)


def _checked_colors(colors, nver: int) -> np.ndarray:
    """A numeric (nver, 3) colour array; floats must be finite."""
    c = np.asarray(colors)
    if c.dtype.kind not in "biuf" or c.shape != (nver, 3):
        raise InputError(f"colors: expected a numeric ({nver}, 3) array, got {c.dtype} "
                         f"with shape {c.shape}")
    if c.dtype != np.uint8 and not np.isfinite(c).all():
        raise InputError("colors: contains NaN or infinite values")
    return c


def _colors_u8(colors, nver: int) -> np.ndarray:
    """Colours as uint8 RGB (floats in [0, 1] are scaled by 255 and rounded)."""
    c = _checked_colors(colors, nver)
    if c.dtype == np.uint8:
        return c
    return np.clip(np.rint(c.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _colors_unit(colors, nver: int) -> np.ndarray:
    """Colours as float in [0, 1] (uint8 divided by 255)."""
    c = _checked_colors(colors, nver)
    if c.dtype == np.uint8:
        return c.astype(np.float64) / 255.0
    return np.clip(c.astype(np.float64), 0.0, 1.0)


# --------------------------------------------------------------------------- meshes


def write_obj(path: PathLike, vertices, triangles, colors=None) -> Path:
    """Wavefront OBJ: ``v x y z`` lines (``v x y z r g b`` with colours in [0, 1]) and
    1-based ``f a b c`` lines. Coordinates use ``%.9g`` (exact float32 round trip), colours
    ``%.6g``. The text is made by a compiled formatter (``runtime/src/meshtext.cpp``: without the
    GIL, on two cores when there are two), byte for byte what Python's ``%`` formatting writes
    (the former writer, kept in tests/test_mesh_io.py and benchmarks/writer_speed.py, which
    times both)."""
    v = _vertices(vertices)
    t = _triangles(triangles, v.shape[0])
    c = None if colors is None else np.ascontiguousarray(_colors_unit(colors, v.shape[0]))
    v = np.ascontiguousarray(v, np.float32 if v.dtype == np.float32 else np.float64)
    t = np.ascontiguousarray(t)
    formatter = _meshtext()
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        formatter.write_obj(f.fileno(), v, t, c, 2 if _usable_cores() > 1 else 1)
    return path


def format_g(values, precision: int) -> list:
    """``["%.{precision}g" % v for v in values]`` for finite values, 1 <= precision <= 9, by
    the formatter of :func:`write_obj`."""
    p = int(precision)
    if not 1 <= p <= 9:
        raise ValueError(f"precision {p} is not supported (1 to 9)")
    x = np.ascontiguousarray(values, np.float64).ravel()
    if not np.isfinite(x).all():
        raise InputError("values: contains NaN or infinite values")
    return _meshtext().format_g_lines(x, p).decode("ascii").split("\n")[:-1]


def _meshtext():
    """The compiled formatter, built by ``pip install`` (there is no slow fallback)."""
    try:
        import runtime._meshtext as module  # (a submodule: not the package's __init__)
    except ImportError as exc:
        raise ImportError("runtime._meshtext, the compiled OBJ formatter, is not built: run "
                          f"'pip install -e .' in the repository root (needs a C++17 compiler) ({exc})") from exc
    return module


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def write_ply(path: PathLike, vertices, triangles, colors=None) -> Path:
    """Binary little-endian PLY: float32 ``x y z`` (+ uchar ``red green blue``), faces as
    ``uchar 3`` + three int32 indices (``property list uchar int vertex_indices``)."""
    v = _vertices(vertices)
    t = _triangles(triangles, v.shape[0])
    vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {v.shape[0]}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        c = _colors_u8(colors, v.shape[0])
        vfields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {t.shape[0]}", "property list uchar int vertex_indices",
               "end_header"]
    vert = np.empty(v.shape[0], dtype=np.dtype(vfields))
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        vert["red"], vert["green"], vert["blue"] = c[:, 0], c[:, 1], c[:, 2]
    face = np.empty(t.shape[0], dtype=np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    face["n"] = 3
    face["i"] = t
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vert.tobytes())
        f.write(face.tobytes())
    return path


# --------------------------------------------------------------------------- PNG


def write_png(path: PathLike, image, compress_level: int = 6) -> Path:
    """Write a PNG with OpenCV, all-or-nothing.

    ``image``: uint8 ``(H, W)`` / ``(H, W, 1)`` gray, ``(H, W, 3)`` BGR, ``(H, W, 4)``
    BGRA (stored as RGB/RGBA, OpenCV's convention), or uint16 ``(H, W)`` gray (16-bit PNG)."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not ((img.ndim == 2 and img.dtype in (np.uint8, np.uint16))
            or (img.ndim == 3 and img.dtype == np.uint8 and img.shape[2] in (3, 4))):
        raise InputError(f"image: expected uint8 gray/BGR/BGRA or uint16 gray, got "
                         f"{img.dtype} with shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"image: PNG needs a non-empty image, got shape {img.shape}")
    ok, data = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise InputError(f"image: OpenCV could not encode a {img.dtype} {img.shape} image as PNG")
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return path


def read_png(path: PathLike) -> np.ndarray:
    """Read a PNG with OpenCV, unchanged: gray ``(H, W)`` (uint8/uint16) or BGR/BGRA uint8."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise InputError(f"png: cannot read {path} ({exc.strerror or exc})") from exc
    if data[:8].tobytes() != b"\x89PNG\r\n\x1a\n":
        raise InputError(f"png: {path} is not a PNG file")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"png: {path} is damaged or truncated")
    return img


# --------------------------------------------------------------------------- depth


def depth_to_u16(depth) -> Tuple[np.ndarray, np.ndarray]:
    """Map a depth buffer to uint16 (nearer = brighter): empty pixels (non-finite or
    <= -1e8, the z-buffer's initial value) -> 0; drawn pixels linearly to [1, 65535]
    with the farthest at 1 and the nearest at 65535 (all 65535 if constant).
    Returns ``(u16, drawn_mask)``."""
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise InputError(f"depth: expected an (H, W) array, got shape {d.shape}")
    drawn = np.isfinite(d) & (d > np.float32(-1e8))
    out = np.zeros(d.shape, np.uint16)
    if drawn.any():
        vals = d[drawn].astype(np.float64)
        lo, hi = vals.min(), vals.max()
        scaled = (vals - lo) / (hi - lo) if hi > lo else np.ones_like(vals)
        out[drawn] = np.rint(1.0 + scaled * 65534.0).astype(np.uint16)
    return out, drawn


def write_depth(path: PathLike, depth) -> Tuple[Path, Path]:
    """Write a depth buffer as a 16-bit gray PNG (see :func:`depth_to_u16`: 0 = empty,
    1..65535 = far..near, normalised per image) at ``path`` and the raw float32 array
    (empty pixels as -inf) next to it with the suffix ``.npy``. Returns both paths."""
    u16, drawn = depth_to_u16(depth)
    raw = np.where(drawn, np.asarray(depth, dtype=np.float32), np.float32(-np.inf))
    png = write_png(path, u16)
    npy = Path(path).with_suffix(".npy")
    with replacing(npy) as tmp:
        np.save(tmp, raw.astype(np.float32))
    return png, npy

