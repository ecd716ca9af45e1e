"""Sim3DR: vertex normals and z-buffered triangle rasterisation (C++ core, checked API).

Coordinates: vertices ``(N, 3)`` in image space, x right, y down, z larger = nearer;
pixel ``(x, y)`` is sampled at its integer coordinates. The rasterisation rules are the
release's (see ``docs/ORIGINAL.md`` section 3), except that degenerate triangles (float32
barycentric denominator exactly 0) are skipped instead of painting their bounding box.

Every function validates its arguments before calling C++ and raises
:class:`Sim3DRInputError` (a ``ValueError``) with a message naming the argument; a
failure inside C++ (out of memory) raises :class:`Sim3DRError` (a ``RuntimeError``), never
aborts the interpreter. Sim3DR is self-contained (it imports nothing from the ``runtime``
package, so there is no import cycle); ``runtime.render`` converts these errors into
``runtime.errors.InputError`` and ``runtime.errors.CmpError``.

Threads: ``num_threads=None`` reads the environment variable ``SIM3DR_NUM_THREADS`` and
otherwise uses the hardware concurrency; either way 1 to :data:`MAX_THREADS`. The C++
core uses fewer when fewer are useful (one thread for fewer than 256 triangles or 8 rows,
never more threads than horizontal bands of at least 4 rows) and carries on with fewer
when the OS refuses to start one. Its worker threads are started on first use and kept
for later calls (a pool shared by concurrent callers; a forked child starts its own).
:func:`get_normal` and :func:`Sim3DR.lighting.light_colors`, which have no
``num_threads`` argument, use ``SIM3DR_NUM_THREADS`` when it is valid and the hardware
concurrency otherwise. Results do not depend on the thread count (nor on the SIMD
instruction set the C++ kernels pick at run time).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from . import _sim3dr

__all__ = [
    "DEPTH_INIT",
    "MAX_THREADS",
    "Sim3DRError",
    "Sim3DRInputError",
    "get_normal",
    "new_depth_buffer",
    "rasterize",
    "rasterize_buffers",
    "resolve_num_threads",
]

#: Initial z-buffer value (the release's): a pixel is drawn when its depth exceeds it.
DEPTH_INIT: float = -1e8

#: Most threads one call may use. More buy nothing on today's machines and each costs a
#: stack and per-band bookkeeping (512 threads on a 65536x1 image once cost 1.7 GB).
MAX_THREADS: int = _sim3dr.MAX_THREADS

_INT32_MAX = np.iinfo(np.int32).max


class Sim3DRInputError(ValueError):
    """An array or parameter handed to Sim3DR is unusable (message names the argument)."""


class Sim3DRError(RuntimeError):
    """The C++ core failed (out of memory): the message names the function."""


def _native(what: str, fn, *args):
    """Call a C++ function; its exceptions (already Python ones thanks to ``except +``)
    become :class:`Sim3DRError`."""
    try:
        return fn(*args)
    except MemoryError as exc:
        raise Sim3DRError(f"{what}: out of memory") from exc
    except RuntimeError as exc:
        raise Sim3DRError(f"{what}: {exc}") from exc


# --------------------------------------------------------------------------- validation


def _numeric(name: str, a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise Sim3DRInputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def _check_vertices(vertices) -> np.ndarray:
    v = _numeric("vertices", vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise Sim3DRInputError(f"vertices: expected an (N, 3) array, got shape {v.shape}")
    v = np.ascontiguousarray(v, dtype=np.float32)
    if not _sim3dr.all_finite(v):
        raise Sim3DRInputError("vertices: contains NaN or infinite values")
    return v


def _check_triangles(triangles, nver: int) -> np.ndarray:
    t = _numeric("triangles", triangles)
    if t.ndim != 2 or t.shape[1] != 3:
        raise Sim3DRInputError(f"triangles: expected an (M, 3) array, got shape {t.shape}")
    if t.dtype.kind not in "iu":
        raise Sim3DRInputError(f"triangles: expected integer indices, got dtype {t.dtype}")
    if t.size:
        if t.dtype == np.int32 and t.flags.c_contiguous:
            lo, hi = _sim3dr.index_range(t)  # one C++ pass instead of two numpy ones
        else:
            lo, hi = t.min(), t.max()
        if lo < 0:
            raise Sim3DRInputError(
                f"triangles: index {int(lo)} out of range for {nver} vertices")
        if hi >= nver:
            raise Sim3DRInputError(
                f"triangles: index {int(hi)} out of range for {nver} vertices")
    return np.ascontiguousarray(t, dtype=np.int32)


def _check_colors(colors, nver: int, channels: int) -> np.ndarray:
    c = _numeric("colors", colors)
    if c.ndim != 2 or c.shape != (nver, channels):
        raise Sim3DRInputError(
            f"colors: expected shape ({nver}, {channels}) (one row per vertex, one column "
            f"per image channel), got {c.shape}")
    c = np.ascontiguousarray(c, dtype=np.float32)
    if not np.isfinite(c).all():
        raise Sim3DRInputError("colors: contains NaN or infinite values")
    return c


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise Sim3DRInputError(
            f"image: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] < 1:
        raise Sim3DRInputError(
            f"image: expected an (H, W, C) array, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.float32):
        raise Sim3DRInputError(f"image: expected dtype uint8 or float32, got {image.dtype}")
    if not image.flags.c_contiguous:
        raise Sim3DRInputError("image: must be C-contiguous (it is drawn on in place)")
    if not image.flags.writeable:
        raise Sim3DRInputError("image: must be writable (it is drawn on in place)")
    return image


def _check_depth(depth_buffer, h: int, w: int) -> np.ndarray:
    if depth_buffer is None:
        return new_depth_buffer(h, w)
    d = depth_buffer
    if not isinstance(d, np.ndarray) or d.dtype != np.float32 or d.shape != (h, w):
        shape = getattr(d, "shape", None)
        dtype = getattr(d, "dtype", type(d).__name__)
        raise Sim3DRInputError(
            f"depth_buffer: expected a float32 array of shape ({h}, {w}), got {dtype} "
            f"with shape {shape}")
    if not d.flags.c_contiguous or not d.flags.writeable:
        raise Sim3DRInputError("depth_buffer: must be a writable C-contiguous array")
    return d


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise Sim3DRInputError(f"alpha: expected a number in [0, 1], got {alpha!r}") from None
    if not (0.0 <= a <= 1.0):
        raise Sim3DRInputError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    return a


def _check_size(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 0 < value <= _INT32_MAX:
        raise Sim3DRInputError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _thread_count(name: str, value, shown) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= MAX_THREADS:
        raise Sim3DRInputError(
            f"{name}: expected an integer from 1 to {MAX_THREADS}, got {shown!r}")
    return int(value)


def resolve_num_threads(num_threads: Optional[int] = None) -> int:
    """Thread count asked for by ``num_threads``: the argument, else
    ``$SIM3DR_NUM_THREADS``, else the hardware concurrency; 1 to :data:`MAX_THREADS`."""
    if num_threads is not None:
        return _thread_count("num_threads", num_threads, num_threads)
    env = os.environ.get("SIM3DR_NUM_THREADS", "").strip()
    if not env:
        return _sim3dr.hardware_concurrency()
    try:
        n = int(env)
    except ValueError:
        n = 0
    return _thread_count("SIM3DR_NUM_THREADS", n, env)


# --------------------------------------------------------------------------- public API


def _default_threads() -> int:
    """Threads for the functions without a ``num_threads`` argument (normals, light):
    ``$SIM3DR_NUM_THREADS`` when valid, else the hardware concurrency (never an error:
    these functions did not read the variable before)."""
    try:
        return resolve_num_threads()
    except Sim3DRInputError:
        return _sim3dr.hardware_concurrency()


def new_depth_buffer(height: int, width: int) -> np.ndarray:
    """A fresh ``(height, width)`` float32 z-buffer filled with :data:`DEPTH_INIT`.

    Pass the same buffer to several :func:`rasterize` calls to z-test meshes together."""
    h, w = _check_size("height", height), _check_size("width", width)
    return _native("new_depth_buffer", np.full, (h, w), DEPTH_INIT, np.float32)


def get_normal(vertices, triangles) -> np.ndarray:
    """Area-weighted unit vertex normals, ``(N, 3)`` float32.

    Each triangle's unnormalised ``(v1 - v0) x (v2 - v0)`` is summed into its three
    vertices, then every sum is normalised; vertices with a zero sum get ``(0, 0, 0)``."""
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    out = np.empty_like(v)
    _native("get_normal", _sim3dr.get_normal, v, t, out, _default_threads())
    return out


def rasterize(vertices, triangles, colors, image: np.ndarray, alpha: float = 1.0,
              depth_buffer: Optional[np.ndarray] = None,
              num_threads: Optional[int] = None) -> np.ndarray:
    """Draw a mesh into ``image`` in place (and return it).

    vertices: ``(N, 3)`` image-space positions. triangles: ``(M, 3)`` vertex indices,
    drawn in order. colors: ``(N, C)`` per-vertex colours, ``C`` = image channels, in
    [0, 1] for uint8 images (pixel = ``uint8((1 - alpha) * pixel + alpha * 255 * colour)``,
    truncated after clamping to [0, 255]) and in the image's own units for float32
    images (pixel = ``(1 - alpha) * pixel + alpha * colour``).
    image: writable C-contiguous ``(H, W, C)`` uint8 or float32.
    depth_buffer: optional ``(H, W)`` float32 z-buffer, updated in place (see
    :func:`new_depth_buffer`); a fresh one initialised to :data:`DEPTH_INIT` by default.
    """
    n = resolve_num_threads(num_threads)
    args = _draw_arguments(vertices, triangles, colors, image, alpha, depth_buffer)
    if args is not None:
        draw = _sim3dr.rasterize_u8 if args[3].dtype == np.uint8 else _sim3dr.rasterize_f32
        _native("rasterize", draw, *args, n)
    return image


def _draw_arguments(vertices, triangles, colors, image, alpha, depth_buffer):
    """Checked (vertices, triangles, colours, image, depth, alpha) for the C++ draw
    functions, or None when the image is empty."""
    img = _check_image(image)
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    c = _check_colors(colors, v.shape[0], img.shape[2])
    a = _check_alpha(alpha)
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        return None
    return v, t, c, img, _check_depth(depth_buffer, h, w), a


def rasterize_buffers(vertices, triangles, height: int, width: int,
                      depth_buffer: Optional[np.ndarray] = None,
                      background: float = -np.inf,
                      num_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Depth and triangle-index buffers of a mesh, same rules as :func:`rasterize`.

    Returns ``(depth, tri_index)``: ``depth`` ``(H, W)`` float32, the winning depth per
    pixel and ``background`` (default ``-inf``) where no triangle was drawn;
    ``tri_index`` ``(H, W)`` int32, the index of the triangle drawn there, ``-1`` where
    none. With ``depth_buffer`` (float32 ``(H, W)``, e.g. shared with :func:`rasterize`)
    the z-test starts from it and it is updated in place; ``depth`` is then a copy.
    """
    h, w = _check_size("height", height), _check_size("width", width)
    v = _check_vertices(vertices)
    t = _check_triangles(triangles, v.shape[0])
    d = _check_depth(depth_buffer, h, w)
    n = resolve_num_threads(num_threads)
    index = _native("rasterize_buffers", np.full, (h, w), -1, np.int32)
    _native("rasterize_buffers", _sim3dr.rasterize_index, v, t, d, index, n)
    depth = d.copy() if depth_buffer is not None else d
    depth[index < 0] = np.float32(background)
    return depth, index
