"""Validation of ready-made fbank features: the release's preprocessed ``(T, 64)`` arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import InputError

N_MELS = 64


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
    return np.ascontiguousarray(features, dtype=np.float32)


def load_fbank_file(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` fbank written by the release's preprocessing (or ``cmp-face fbank``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    return check_fbank(array, name=str(path))
