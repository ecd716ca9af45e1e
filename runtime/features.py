"""Validation of ready-made fbank features: the release's preprocessed ``(T, 64)`` arrays.

``.npy`` files are parsed here rather than by ``numpy.load``: a malformed header makes
``numpy.load`` raise whatever its parser meets (TokenError, SyntaxError, TypeError...), and a
small file declaring 10**11 rows makes it allocate before it notices that the data is missing.
We read the header with :mod:`numpy.lib.format`, check its shape, dtype and byte count against
the file and ``max_bytes`` first, and only then read the data.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from runtime.audio import DEFAULT_MAX_BYTES, read_limited
from runtime.errors import InputError
from runtime.npy import read_header

N_MELS = 64
MIN_FRAMES = 1000  # the release tiles shorter utterances to 1000 frames
VALUE_MARGIN = 2.0

__all__ = ["N_MELS", "check_fbank", "load_fbank_file", "max_abs_value"]


def max_abs_value(frames: int) -> float:
    """The largest ``|value|`` accepted in normalised features of ``frames`` frames.

    A column z-normalised over n frames has ``|x| <= sqrt(n - 1)`` (equality: one frame apart
    from n - 1 equal ones). The release's features have ``n = max(T, 1000)`` at most (shorter
    utterances are normalised, then tiled). The margin of 2 covers float32 rounding (~1e-6
    relative), a sample instead of population std (factor sqrt(n / (n - 1))) and crops of at
    least a quarter of a longer normalised utterance; the release's 12 files reach at most
    11.5 (T = 1000, bound 63.2). Anything beyond is not a normalised fbank: 3e38 makes the
    encoder overflow to NaN.
    """
    return VALUE_MARGIN * math.sqrt(max(frames, MIN_FRAMES) - 1)


def check_fbank(features: object, name: str = "fbank") -> np.ndarray:
    """Return ``features`` as a C-contiguous float32 ``(T, 64)`` array, or raise InputError."""
    if not isinstance(features, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(features).__name__}")
    if features.dtype.kind != "f":
        raise InputError(f"{name}: dtype {features.dtype} is not supported; expected float32 "
                         f"features of shape (T, {N_MELS})")
    if features.ndim != 2 or features.shape[1] != N_MELS:
        hint = " (transposed? the release's files are (T, 64))" if features.ndim == 2 and features.shape[0] == N_MELS else ""
        raise InputError(f"{name}: expected shape (T, {N_MELS}), got {features.shape}{hint}")
    if features.shape[0] == 0:
        raise InputError(f"{name}: empty (0 frames)")
    finite = np.isfinite(features)
    if not finite.all():
        frame = int(np.argwhere(~finite)[0][0])
        raise InputError(f"{name}: contains NaN or inf values (first at frame {frame})")
    limit = max_abs_value(features.shape[0])
    magnitude = np.abs(features)  # before the float32 cast, which would overflow float64 values
    if magnitude.max() > limit:
        frame, band = (int(i) for i in np.unravel_index(int(magnitude.argmax()), features.shape))
        raise InputError(
            f"{name}: value {float(features[frame, band]):.6g} at frame {frame}, filter {band} is not "
            f"a normalised fbank value: features normalised per filter over "
            f"{max(features.shape[0], MIN_FRAMES)} frames stay within +-{limit:.1f} "
            "(2 x sqrt(frames - 1)); give the release's normalised features, or audio")
    return np.ascontiguousarray(features, dtype=np.float32)


def load_fbank_file(path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX_BYTES, *,
                    limit_name: str = "max_bytes") -> np.ndarray:
    """Read a ``.npy`` fbank written by the release's preprocessing (or ``cmp-face fbank``).

    ``max_bytes``: refuse files larger than this (``None``: no limit); the limit is checked,
    and the header's shape, dtype and size against the file, before the data is read.
    ``limit_name``: how the message names that limit (a command line may say "--max-bytes").
    Every problem is an :class:`InputError`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    data = read_limited(str(path), max_bytes, ".npy file", limit_name=limit_name)
    array = _parse_npy(data, path)
    return check_fbank(array, name=str(path))


def _parse_npy(data: bytes, path: Path) -> np.ndarray:
    """The array in the bytes of a ``.npy`` file (format 1.0 or 2.0), never pickles."""
    fh = io.BytesIO(data)
    shape, fortran, dtype = read_header(fh, str(path))
    if dtype.hasobject or dtype.kind != "f" or dtype.subdtype is not None:
        raise InputError(f"{path}: dtype {dtype} is not supported; expected float32 features of "
                         f"shape (T, {N_MELS})")
    if len(shape) != 2 or shape[1] != N_MELS:
        hint = " (transposed? the release's files are (T, 64))" if len(shape) == 2 and shape[0] == N_MELS else ""
        raise InputError(f"{path}: expected shape (T, {N_MELS}), got {tuple(shape)}{hint}")
    if shape[0] < 0:
        raise InputError(f"{path}: not a readable .npy array (corrupt header: shape {tuple(shape)})")
    offset = fh.tell()
    declared = shape[0] * shape[1] * dtype.itemsize  # Python ints: no overflow
    present = len(data) - offset
    if declared != present:
        raise InputError(
            f"{path}: not a readable .npy array (its header declares {tuple(shape)} {dtype} = "
            f"{declared} bytes of data, the file holds {present})")
    return np.frombuffer(data, dtype=dtype, count=shape[0] * shape[1], offset=offset).reshape(
        shape, order="F" if fortran else "C")
