"""Mesh and image writers: OBJ, binary PLY, depth maps and PNG (OpenCV). Every writer is
all-or-nothing: the file is written under a temporary name beside its target, then renamed.

Conventions:
* Vertices ``(N, 3)`` float, triangles ``(M, 3)`` 0-based int (written 1-based in OBJ).
* Vertex colours ``(N, 3)`` in RGB order: float in [0, 1] or uint8 in [0, 255].
* Images are BGR (OpenCV's order) like the rest of the project: :func:`write_png` takes
  BGR/BGRA and stores RGB/RGBA in the file; :func:`read_png` returns BGR/BGRA again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

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
    return t.astype(np.int64, copy=False)


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
    ``%.6g``. The text is made with numpy (:func:`format_g`), a few thousand lines at a time,
    byte for byte what Python's ``%`` formatting writes (the former writer, kept in
    tests/test_mesh_io.py and benchmarks/writer_speed.py, which times both)."""
    v = _vertices(vertices)
    t = _triangles(triangles, v.shape[0])
    c = None if colors is None else _colors_unit(colors, v.shape[0])
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        for text in _obj_text_chunks(v, t, c):
            f.write(text)
    return path


def _obj_text_chunks(v: np.ndarray, t: np.ndarray, c: Optional[np.ndarray]) -> Iterator[bytes]:
    """The OBJ text in pieces: ``_LINES`` vertex or face lines each (small arrays: in the cache,
    and reused by the allocator rather than mapped afresh)."""
    v = v.astype(np.float64, copy=False)
    for i in range(0, v.shape[0], _LINES):
        yield _obj_vertex_text(v[i:i + _LINES], None if c is None else c[i:i + _LINES])
    for i in range(0, t.shape[0], 2 * _LINES):
        yield _obj_face_text(t[i:i + 2 * _LINES])


# --------------------------------------------------------------------------- number formatting
#
# Each number becomes up to 16 ASCII bytes in two little-endian uint64 words (``lo``: bytes 0-7,
# ``hi``: bytes 8-15), zero bytes after the text, computed with numpy integer arithmetic and
# small lookup tables (no Python object per number). Lines are laid out with their numbers in
# fixed-width slots and the zero bytes dropped in one pass (``bytes.translate``). Face indices
# come from a table of " n" strings. About 4x faster than ``%`` formatting on a 2-core machine
# (benchmarks/writer_speed.py); the floor is numpy's cost per operation, the pass that drops
# the padding and the file write itself.

_U = np.uint64
_ZERO_BYTE = b"\x00"


def _pack_words(texts: list, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray) -> None:
    """Put the ASCII ``texts`` (<= 16 bytes each) into ``lo``/``hi`` at ``rows``."""
    for i, text in zip(rows.tolist(), texts):
        raw = text.encode("ascii").ljust(16, _ZERO_BYTE)
        lo[i], hi[i] = np.frombuffer(raw, np.uint64)


class _DigitTables:
    """Lookup tables built once. ``digits3[n]``: the three ASCII digits of n < 1000 in the low
    bytes and the count of its trailing zero digits (3 for 0) in the top byte (8 KB: stays in
    the cache); ``indices``: the " n" strings of face indices (grown as needed)."""

    def __init__(self) -> None:
        n = np.arange(1000, dtype=np.int64)
        digits = np.zeros(1000, np.uint64)
        for i in range(3):  # the first digit in the lowest byte
            digits |= ((n // 10 ** (2 - i) % 10) + ord("0")).astype(np.uint64) << _U(8 * i)
        trailing = np.where(n == 0, 3, np.where(n % 100 == 0, 2, np.where(n % 10 == 0, 1, 0)))
        self.digits3 = digits | (trailing.astype(np.uint64) << _U(56))
        self.indices = np.zeros(0, np.uint64)

    def index_strings(self, n: int) -> np.ndarray:
        """" 1", " 2", ... " n" (a space and the digits; n < 10**6) as uint64, grown as needed."""
        table = self.indices  # (another thread may replace it meanwhile: use this one)
        if table.size < n:
            k = np.arange(1, min(max(n, 2 * table.size), 10 ** 6 - 1) + 1, dtype=np.int64)
            lo, _, _ = _integer_words(k, self)
            table = self.indices = _U(ord(" ")) | (lo << _U(8))
        return table[:n]


_TABLES: Optional[_DigitTables] = None


def _tables() -> _DigitTables:
    global _TABLES
    if _TABLES is None:
        _TABLES = _DigitTables()
    return _TABLES


_BYTE, _TOP_BYTE = _U(0xFF), _U(56)
_CHUNK = 16384  # values formatted at a time: the temporaries stay small (in the cache)
_LINES = 4096  # OBJ lines made at a time


def _nine_digits(d: np.ndarray, tables: _DigitTables) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nine ASCII digits of ``d`` < 10**9 (float64 holding an integer; leading zeros kept):
    ``lo`` (digits 0-7), ``hi`` (digit 8) and the count of trailing zero digits."""
    # exact: a correctly rounded quotient of integers cannot reach the next integer here
    c0 = np.floor(d / 1e6)
    rest = d - c0 * 1e6
    c1 = np.floor(rest / 1e3)
    c2 = rest - c1 * 1e3
    t = tables.digits3
    w0 = np.take(t, c0.astype(np.intp))
    w1 = np.take(t, c1.astype(np.intp))
    w2 = np.take(t, c2.astype(np.intp))
    lo = (w0 & _U(0xFFFFFF)) | ((w1 & _U(0xFFFFFF)) << _U(24)) | (w2 << _U(48))
    hi = (w2 >> _U(16)) & _BYTE
    z2, z1, z0 = w2 >> _TOP_BYTE, w1 >> _TOP_BYTE, w0 >> _TOP_BYTE
    zeros = z2 + (z2 == 3) * (z1 + (z1 == 3) * z0)
    return lo, hi, zeros.astype(np.int64)


def _ones_below_byte(n: np.ndarray) -> np.ndarray:
    """uint64 with the low ``n`` bytes set (``n`` int64; <= 0: none, >= 8: all)."""
    return (_U(1) << (np.maximum(n, 0) * 8).astype(np.uint64)) - _U(1)  # numpy: a shift >= 64 gives 0


def _integer_words(k: np.ndarray, tables: _DigitTables) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``"%d" % k`` for int64 0 <= k < 10**9 as (lo, hi) words and lengths."""
    lo, hi, _ = _nine_digits(k.astype(np.float64), tables)
    width = 1 + sum((k >= 10 ** i).astype(np.int64) for i in range(1, 9))
    shift = ((9 - width) * 8).astype(np.uint64)  # drop the leading zeros: shift the 9 bytes down
    lo2 = (lo >> shift) | (hi << (_U(64) - shift))  # numpy: a shift by 64 or more gives 0
    hi2 = hi >> shift
    return lo2, hi2, width


# Prefixes by (negative, zeros after "0."): "", "0.", "0.0", "0.00", "0.000", then with "-";
# the length in the top byte.
_PREFIXES = ["", "0.", "0.0", "0.00", "0.000"]
_PREFIX_WORDS = np.array([int.from_bytes(t.encode(), "little") | (len(t) << 56)
                          for t in _PREFIXES + ["-" + t for t in _PREFIXES]], np.uint64)
_POW10 = 10.0 ** np.arange(23)  # exact in float64 up to 1e22
_POWERS_OFFSET = 330  # _POWERS_OF_TEN[i + 330] = fl(10**i), i = -330..310 (inf beyond)
_POWERS_OF_TEN = np.array([float(f"1e{i}") for i in range(-_POWERS_OFFSET, 311)] + [np.inf])
_LOG10_2 = 0.30102999566398120


def _two_product_error(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``a * b - y`` exactly, for ``y = fl(a * b)`` (Dekker's product; no overflow here)."""
    def split(v):
        c = v * 134217729.0  # 2**27 + 1
        hi = c - (c - v)
        return hi, v - hi
    ah, al = split(a)
    bh, bl = split(b)
    return ((ah * bh - y) + ah * bl + al * bh) + al * bl


def _g_words(x: np.ndarray, p: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_g_chunk` over ``x`` (float64, 1-D) a cache-sized slice at a time."""
    lo, hi = np.empty(x.size, np.uint64), np.empty(x.size, np.uint64)
    for i in range(0, x.size, _CHUNK):
        lo[i:i + _CHUNK], hi[i:i + _CHUNK] = _g_chunk(x[i:i + _CHUNK], p)
    return lo, hi


def _g_chunk(x: np.ndarray, p: int) -> Tuple[np.ndarray, np.ndarray]:
    """``"%.{p}g" % v`` for float64 ``v`` (finite), 1 <= p <= 9, as (lo, hi) uint64 words.

    The ``p`` significant digits ``D`` are the correctly rounded ``y = |v| * 10**k`` with
    ``10**(p-1) <= D < 10**p``: ``k`` <= 22 keeps the power exact, so the float64 product is the
    exact one correctly rounded, once; rounding is monotonic and every ``n + 1/2`` below 2**52 is
    a float64, so the nearest integer of ``y`` is right unless ``y`` is exactly ``n + 1/2``, and
    then the product's exact error (Dekker) tells a tie (to even, as Python rounds) from a value
    above or below. Python formats, one by one, what needs a power beyond 1e22 (below 1e-14 or
    from 1e31 on, for 9 digits) and the halves of a division (``|v|`` >= ``10**p``)."""
    tables = _tables()
    a = np.abs(x)
    zero = a == 0
    e2 = np.frexp(a)[1]
    X = np.floor((e2 - 1) * _LOG10_2).astype(np.int64)  # floor(log10(a)), or one less
    X += a >= np.take(_POWERS_OF_TEN, X + (_POWERS_OFFSET + 1))  # fl(10**i): checked below
    X[zero] = 0
    k = p - 1 - X
    y = a * np.take(_POW10, np.minimum(np.maximum(k, 0), 22))
    divide = np.flatnonzero(k < 0)  # |v| >= 10**p: a division by 10**-k
    if divide.size:
        y[divide] = a[divide] / _POW10[np.minimum(-k[divide], 22)]
    off = np.flatnonzero((y >= 10.0 ** p) | (y < 10.0 ** (p - 1)))  # within an ulp of a power of ten
    off = off[~zero[off]]
    if off.size:
        X[off] += np.where(y[off] >= 10.0 ** p, 1, -1)
        k[off] = ko = p - 1 - X[off]
        y[off] = np.where(ko >= 0, a[off] * _POW10[np.clip(ko, 0, 22)], a[off] / _POW10[np.clip(-ko, 0, 22)])
    slow = (np.abs(k) > 22) & ~zero  # 10**k would not be exact
    d = np.floor(y)
    half = np.flatnonzero(y - d == 0.5)
    if half.size:  # exactly n + 1/2: a tie, or a product rounded onto the half
        half = half[~slow[half]]
        by_division = k[half] < 0
        slow[half[by_division]] = True
        h = half[~by_division]
        err = _two_product_error(a[h], _POW10[k[h]], y[h])
        y[h] = d[h] + ((err > 0) | ((err == 0) & (d[h] % 2 == 1)))
    y = np.rint(y, out=y)
    y[zero] = 0.0  # "0"
    if slow.any():
        y[slow] = 10.0 ** (p - 1)  # a placeholder: Python formats these
    carry = np.flatnonzero(y == 10.0 ** p)  # 9.9999999996 -> 10.0000000
    if carry.size:
        y[carry] = 10.0 ** (p - 1)
        X[carry] += 1
    if p < 9:
        y *= 10.0 ** (9 - p)  # nine digits, the last ones zeros
    lo, hi, zeros = _nine_digits(y, tables)
    shown = np.maximum(9 - zeros, 1)  # significant digits: trailing zeros dropped ("0": one)
    exp_style = (X < -4) | (X >= p)
    below_one = (X < 0) & ~exp_style
    # "." after q digits: after the integer part (fixed), after one digit (exponent), none (below one)
    q = X + 1
    np.copyto(q, 1, where=exp_style)
    np.copyto(q, 9, where=below_one)
    mask = _ones_below_byte(q)
    q_u = (q * 8).astype(np.uint64)
    lo1 = (lo & mask) | (_U(ord(".")) << q_u) | ((lo & ~mask) << _U(8))  # a shift >= 64 gives 0
    before_last = (q <= 8).astype(np.uint64)
    hi1 = (hi << (before_last * _U(8))) | ((lo >> _TOP_BYTE) * (q <= 7)) | (_U(ord(".")) * (q == 8))
    # the digits up to the last shown one, with "."; below one: the shown digits
    length = q + (shown > q) * (shown + 1 - q)
    np.copyto(length, shown, where=below_one)
    # sign and "0.000" in front
    which = np.signbit(x) * 5 + below_one * (-X)
    prefix = np.take(_PREFIX_WORDS, which)
    lp = (prefix >> _TOP_BYTE)
    sh = lp * _U(8)
    lo2 = (prefix & ~(_BYTE << _TOP_BYTE)) | (lo1 << sh)
    hi2 = (hi1 << sh) | (lo1 >> (_U(64) - sh))
    length += lp.astype(np.int64)
    lo2 &= _ones_below_byte(length)
    hi2 &= _ones_below_byte(length - 8)
    e = np.flatnonzero(exp_style & ~slow)
    if e.size:  # "e+XX" / "e-XXX" after the digits
        ex = X[e]
        ea = np.abs(ex)
        three = ea >= 100
        d1 = np.where(three, ea // 100, ea // 10)
        d2 = np.where(three, ea // 10 % 10, ea % 10)
        word = (_U(ord("e")) | (np.where(ex < 0, _U(ord("-")), _U(ord("+"))) << _U(8))
                | ((d1 + ord("0")).astype(np.uint64) << _U(16)) | ((d2 + ord("0")).astype(np.uint64) << _U(24))
                | (three * (ea % 10 + ord("0"))).astype(np.uint64) << _U(32))
        shift = (length[e] * 8).astype(np.uint64)
        lo2[e] |= word << shift  # (uint64 arithmetic wraps: a "negative" shift is >= 64, giving 0)
        hi2[e] |= (word >> (_U(64) - shift)) | (word << (shift - _U(64)))
    rows = np.flatnonzero(slow)
    if rows.size:
        _pack_words([f"%.{p}g" % value for value in x[rows].tolist()], lo2, hi2, rows)
    return lo2, hi2


def format_g(x: np.ndarray, precision: int) -> np.ndarray:
    """``"%.{precision}g" % v`` (1 <= precision <= 9) for every finite float64 ``v`` of ``x``, as
    rows of 16 bytes: the ASCII text, then zero bytes. Byte for byte what Python's ``%`` gives."""
    p = int(precision)
    if not 1 <= p <= 9:
        raise ValueError(f"precision {p} is not supported (1 to 9)")
    x = np.ascontiguousarray(x, np.float64).ravel()
    lo, hi = _g_words(x, p)
    return np.stack([lo, hi], axis=1).view(np.uint8).reshape(x.size, 16)


def _text_without_zero_bytes(rows: np.ndarray) -> bytes:
    return rows.tobytes().translate(None, _ZERO_BYTE)


def _obj_vertex_text(v: np.ndarray, c: Optional[np.ndarray]) -> bytes:
    """``"v %.9g %.9g %.9g\n"`` (``"v %.9g %.9g %.9g %.6g %.6g %.6g\n"``) per vertex."""
    n = v.shape[0]
    columns = [(v.astype(np.float64, copy=False), 9)] + ([] if c is None else [(np.asarray(c, np.float64), 6)])
    k = 3 * len(columns)
    rows = np.zeros((n, 1 + 17 * k + 1), np.uint8)
    rows[:, 0] = ord("v")
    rows[:, -1] = ord("\n")
    slots = rows[:, 1:-1].reshape(n, k, 17)
    slots[:, :, 0] = ord(" ")
    words = slots[:, :, 1:].view(np.uint64)  # (n, k, 2)
    for i, (values, p) in enumerate(columns):
        lo, hi = _g_chunk(np.ascontiguousarray(values).ravel(), p)
        words[:, 3 * i:3 * i + 3, 0] = lo.reshape(n, 3)
        words[:, 3 * i:3 * i + 3, 1] = hi.reshape(n, 3)
    return _text_without_zero_bytes(rows)


def _obj_face_text(t: np.ndarray) -> bytes:
    """``"f %d %d %d\n"`` per triangle (1-based)."""
    m = t.shape[0]
    if m == 0:
        return b""
    top = int(t.max()) + 1
    if top >= 10 ** 6:  # beyond the " n" table (a million vertices): integers in two words
        if top >= 10 ** 9:
            return ("f %d %d %d\n" * m % tuple((t + 1).ravel().tolist())).encode("ascii")
        lo, hi, _ = _integer_words(t.ravel() + 1, _tables())
        rows = np.zeros((m, 1 + 3 * 17 + 1), np.uint8)
        rows[:, 0] = ord("f")
        rows[:, -1] = ord("\n")
        slots = rows[:, 1:-1].reshape(m, 3, 17)
        slots[:, :, 0] = ord(" ")
        words = slots[:, :, 1:].view(np.uint64)
        words[:, :, 0] = lo.reshape(m, 3)
        words[:, :, 1] = hi.reshape(m, 3)
        return _text_without_zero_bytes(rows)
    names = _tables().index_strings(top)  # " 1", " 2", ...
    rows = np.empty((m, 25), np.uint8)
    rows[:, 24] = ord("\n")
    words = rows[:, :24].view(np.uint64)
    np.take(names, t[:, 0], out=words[:, 0])
    words[:, 0] = (words[:, 0] << _U(8)) | _U(ord("f"))
    np.take(names, t[:, 1], out=words[:, 1])
    np.take(names, t[:, 2], out=words[:, 2])
    return _text_without_zero_bytes(rows)


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

