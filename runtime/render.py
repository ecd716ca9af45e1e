"""Rendering helpers used by the Predictor (lit Sim3DR renders, numpy only).

Images are uint8 BGR ``(H, W, 3)``. Vertices may be given as ``(N, 3)`` or in the
release's ``(3, N)`` layout (recognised when the first axis is 3 and the second is not).
Bad arrays and sizes raise :class:`runtime.errors.InputError` (Sim3DR's own
``Sim3DRInputError`` is converted, message unchanged); a failure inside the C++ core (out
of memory) raises :class:`runtime.errors.CmpError`. Render sides are checked by
:func:`check_size` (1 to :data:`MAX_SIZE` pixels) before any work.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, Union

import numpy as np

import Sim3DR
from Sim3DR.lighting import render_lit
from runtime.errors import CmpError, InputError

__all__ = ["DARK_GREY", "MAX_SIZE", "aligned_to_image", "check_num_threads", "check_size", "depth_map",
           "frontal_to_image", "render_aligned", "render_frontal", "render_overlap", "resize_image"]

#: Default background of renders that have no image frame (BGR).
DARK_GREY = (48, 48, 48)
#: Side of the release's image frame (aligned meshes live in 120x120 image coordinates).
FRAME = 120
#: Largest render side in pixels. A render holds about 10 bytes per pixel at its peak
#: (canvas 3, z-buffer 4, triangle index 4 for depth maps; the background resize works in
#: row blocks of bounded size): ~170 MB at 4096, ~670 MB at 8192. The release's meshes
#: (53k vertices, a 120-pixel frame) have no detail that a larger image would show.
MAX_SIZE = 4096

Background = Union[None, np.ndarray, Sequence[int]]


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    try:
        yield
    except Sim3DR.Sim3DRInputError as exc:
        raise InputError(str(exc)) from exc
    except Sim3DR.Sim3DRError as exc:
        raise CmpError(str(exc)) from exc


def _as_n3(vertices) -> np.ndarray:
    v = np.asarray(vertices)
    if v.ndim == 2 and v.shape[0] == 3 and v.shape[1] != 3:
        v = v.T
    if v.dtype.kind not in "biuf" or v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"vertices: expected an (N, 3) or (3, N) numeric array, got "
                         f"{v.dtype} with shape {v.shape}")
    v = np.ascontiguousarray(v, dtype=np.float32)
    if not np.isfinite(v).all():
        raise InputError("vertices: contains NaN or infinite values")
    return v


def check_size(size: int | None, default: int | None = None, name: str = "size") -> int:
    """A render side in pixels, checked: an integer from 1 to :data:`MAX_SIZE` (``None``
    means ``default`` when one is given). Raises :class:`InputError` otherwise, e.g.
    ``size: expected an integer from 1 to 4096 (pixels), got 0``."""
    if size is None and default is not None:
        size = default
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) \
            or not 1 <= size <= MAX_SIZE:
        raise InputError(f"{name}: expected an integer from 1 to {MAX_SIZE} (pixels), got {size!r}")
    return int(size)


def check_num_threads(num_threads: int | None = None) -> int:
    """The rasteriser's thread count, checked before any work: ``num_threads``, else
    ``$SIM3DR_NUM_THREADS``, else the hardware concurrency, 1 to ``Sim3DR.MAX_THREADS``
    (256). Raises :class:`InputError`, e.g. ``SIM3DR_NUM_THREADS: expected an integer
    from 1 to 256, got '0'``."""
    with _input_errors():
        return Sim3DR.resolve_num_threads(num_threads)


def _bgr_image(name: str, image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        raise InputError(f"{name}: expected a uint8 (H, W, 3) BGR image, got {img.dtype} "
                         f"with shape {img.shape}")
    return img


def resize_image(image: np.ndarray, height: int, width: int,
                 mode: str = "bilinear") -> np.ndarray:
    """Resize a uint8 ``(H, W, C)`` image with pixel-centre alignment (like OpenCV's
    ``INTER_LINEAR`` / ``INTER_NEAREST``, no antialiasing) to ``height`` x ``width``
    (each checked by :func:`check_size`); pure numpy."""
    height, width = check_size(height, name="height"), check_size(width, name="width")
    img = np.asarray(image)
    h0, w0 = img.shape[:2]
    if (h0, w0) == (height, width):
        return np.ascontiguousarray(img).copy()

    def coords(n_out: int, n_in: int) -> np.ndarray:
        return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5

    ys, xs = coords(height, h0), coords(width, w0)
    if mode == "nearest":
        yi = np.clip(np.floor(ys + 0.5), 0, h0 - 1).astype(np.intp)
        xi = np.clip(np.floor(xs + 0.5), 0, w0 - 1).astype(np.intp)
        return np.ascontiguousarray(img[yi][:, xi])
    if mode != "bilinear":
        raise InputError(f"mode: expected 'bilinear' or 'nearest', got {mode!r}")
    ys, xs = np.clip(ys, 0, h0 - 1), np.clip(xs, 0, w0 - 1)
    y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, h0 - 1), np.minimum(x0 + 1, w0 - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = img.astype(np.float32)
    out = np.empty((height, width) + img.shape[2:], np.uint8)
    # Blocks of output rows: the float temporaries (~10 per value) stay at a few MB
    # instead of 120 bytes per output pixel.
    step = max(1, (1 << 20) // (width * img.shape[2]))
    for a in range(0, height, step):
        b = slice(a, a + step)
        top = f[y0[b]][:, x0] * (1 - fx) + f[y0[b]][:, x1] * fx
        bot = f[y1[b]][:, x0] * (1 - fx) + f[y1[b]][:, x1] * fx
        out[b] = np.clip(np.rint(top * (1 - fy[b]) + bot * fy[b]), 0, 255)
    return out


def _background(background: Background, size: int) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 canvas: a BGR colour, or an image resized to fit."""
    if background is None:
        background = DARK_GREY
    bg = np.asarray(background)
    if bg.ndim == 1:
        if bg.shape != (3,) or bg.dtype.kind not in "iuf" or (bg < 0).any() \
                or (bg > 255).any():
            raise InputError(f"background: expected a BGR colour of 3 values in [0, 255] "
                             f"or a uint8 (H, W, 3) image, got {background!r}")
        # Repeating 3 bytes is a memcpy; numpy's broadcast fill of a (3,) colour is ~10x slower.
        pixels = bytearray(bg.astype(np.uint8).tobytes() * (size * size))
        return np.frombuffer(pixels, np.uint8).reshape(size, size, 3)
    return resize_image(_bgr_image("background", bg), size, size)


def render_overlap(vertices_img, triangles, face_image_bgr: np.ndarray) -> np.ndarray:
    """The release's ``_overlap.png``: the aligned mesh (image coordinates of the
    ``face_image_bgr`` frame, 120x120 in the release) lit and drawn over a copy of the
    generated face with alpha 1. Returns a new uint8 BGR image."""
    face = _bgr_image("face_image_bgr", face_image_bgr)
    v = _as_n3(vertices_img)
    with _input_errors():
        return render_lit(v, triangles, face, alpha=1.0)


def frontal_to_image(vertices, size: int = 512, margin: float = 0.05) -> np.ndarray:
    """A mesh in 3DMM coordinates (x right, y up, z toward the viewer, any units) placed in
    a ``size`` x ``size`` image: y flipped to rows, the x/y bounding box centred and scaled
    (aspect kept) to fill the image minus ``margin`` (a fraction of the side) on each side,
    z scaled by the same factor. Returns float32 (N, 3) image coordinates."""
    size = check_size(size)
    if not 0.0 <= margin < 0.5:
        raise InputError(f"margin: expected a number in [0, 0.5), got {margin!r}")
    v = _as_n3(vertices)
    if v.shape[0] == 0:
        return v.copy()
    # Per-axis extents from column reductions (cheaper than axis-0 reductions of (N, 3)).
    lo = np.array([v[:, k].min() for k in range(3)], dtype=np.float64)
    hi = np.array([v[:, k].max() for k in range(3)], dtype=np.float64)
    lo[1], hi[1] = -hi[1], -lo[1]  # y is flipped to image rows
    extent = max(hi[0] - lo[0], hi[1] - lo[1])
    scale = (size - 1) * (1.0 - 2.0 * margin) / extent if extent > 0 else 1.0
    centre = (size - 1) / 2.0
    # out = v * gain + shift per axis, in one float32 pass
    gain = np.array([scale, -scale, scale], dtype=np.float32)
    shift = np.array([centre - (lo[0] + hi[0]) / 2.0 * scale, centre - (lo[1] + hi[1]) / 2.0 * scale,
                      -lo[2] * scale], dtype=np.float32)
    return v * gain + shift


def aligned_to_image(vertices_img, size: int = 512, frame: int = FRAME) -> np.ndarray:
    """An aligned mesh (image coordinates of a ``frame`` x ``frame`` image) scaled to
    ``size`` x ``size``: pixel centres map as ``x' = (x + 0.5) * size / frame - 0.5`` (same
    for y), z is scaled by ``size / frame`` (lighting is unchanged by the uniform scale)."""
    size, frame = check_size(size), check_size(frame, name="frame")
    v = _as_n3(vertices_img)
    k = np.float32(size / frame)
    out = np.empty_like(v)
    out[:, :2] = (v[:, :2] + np.float32(0.5)) * k - np.float32(0.5)
    out[:, 2] = v[:, 2] * k
    return out


def render_frontal(vertices, triangles, size: int = 512, background: Background = None,
                   margin: float = 0.05) -> np.ndarray:
    """Lit frontal render of a mesh in 3DMM coordinates (:func:`frontal_to_image`), e.g. the
    supervised mesh that has no image frame. ``background``: BGR colour (default dark grey)
    or a uint8 image (resized to fit)."""
    size = check_size(size)
    out = frontal_to_image(vertices, size, margin)
    canvas = _background(background, size)
    if out.shape[0] == 0:
        return canvas
    with _input_errors():
        return render_lit(out, triangles, canvas, alpha=1.0)


def render_aligned(vertices_img, triangles, size: int = 512,
                   background: Background = None, frame: int = FRAME) -> np.ndarray:
    """Lit render of an aligned mesh (:func:`aligned_to_image`) at ``size`` x ``size``.
    ``background``: the frame image (e.g. the 120x120 face, resized bilinearly) or a BGR
    colour (default dark grey)."""
    size = check_size(size)
    out = aligned_to_image(vertices_img, size, frame)
    canvas = _background(background, size)
    with _input_errors():
        return render_lit(out, triangles, canvas, alpha=1.0)


def depth_map(vertices_image, triangles, size: int) -> np.ndarray:
    """Float32 (size, size) z-buffer of a mesh already in image coordinates; -inf where empty."""
    size = check_size(size)
    with _input_errors():
        depth, _ = Sim3DR.rasterize_buffers(vertices_image, triangles, size, size)
    return depth

