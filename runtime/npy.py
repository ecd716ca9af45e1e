"""``.npy`` headers from untrusted files: shape and dtype, read without touching the data.

numpy's header parser evaluates a Python literal and can raise almost anything on a damaged file
(TokenError, SyntaxError, MemoryError, TypeError, ...): every failure becomes our InputError.
"""
from __future__ import annotations

from typing import BinaryIO

import numpy as np

from runtime.errors import InputError


def read_header(fh: BinaryIO, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``fh`` (format 1.0 or 2.0), left
    positioned at the start of the data."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} (supported: 1.0 and 2.0)")
    except Exception as exc:  # noqa: BLE001 (see the module docstring)
        raise InputError(f"{name}: not a readable .npy array (corrupt header: {_detail(exc)})") from None
    return shape, fortran, dtype


def _detail(exc: Exception) -> str:
    """A short one-line reason (the header parser's messages can quote the whole header)."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    text = " ".join((text.splitlines() or [""])[0].split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
