"""``.npy`` headers from untrusted files: shape and dtype, read without touching the data.

numpy's header parser evaluates a Python literal and can raise almost anything on a damaged file
(TokenError, SyntaxError, MemoryError, TypeError, ...): every failure becomes our InputError. What
it accepts is checked again by exact type: ``shape`` a tuple of plain non-negative ints (not
``True``, not ``-1``), ``fortran_order`` a bool, ``descr`` a dtype.
"""
from __future__ import annotations

import re
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
    # numpy checks that shape is a tuple of ints and fortran_order a bool with isinstance: True is
    # an int to it, and -1 a fine int. Every field is checked again, strictly, by its exact type.
    if type(shape) is not tuple or not all(type(n) is int for n in shape):
        raise InputError(f"{name}: not a readable .npy array (corrupt header: shape is not valid: {_short(shape)})")
    if any(n < 0 for n in shape):
        raise InputError(f"{name}: not a readable .npy array (corrupt header: shape {_short(shape)})")
    if type(fortran) is not bool:
        raise InputError(f"{name}: not a readable .npy array (corrupt header: fortran_order is not a valid "
                         f"bool: {_short(fortran)})")
    if not isinstance(dtype, np.dtype):
        raise InputError(f"{name}: not a readable .npy array (corrupt header: descr is not a valid dtype "
                         f"descriptor: {_short(dtype)})")
    return shape, fortran, dtype


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _detail(exc: Exception) -> str:
    """A short one-line reason (the header parser's messages can quote the whole header)."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    text = " ".join((text.splitlines() or [""])[0].split()) or type(exc).__name__
    text = re.sub(r" object at 0x[0-9A-Fa-f]+>", " object>", text)  # ast's messages: no addresses
    return text if len(text) <= 120 else text[:117] + "..."
