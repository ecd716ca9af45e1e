"""Hand-written ``.npy`` files for the readers' tests (headers numpy itself would never write)."""
from __future__ import annotations


def npy_bytes(header: str, data: bytes = b"", version: int = 1) -> bytes:
    """A .npy file with a hand-written header dict (padded as numpy does; the header length is
    written in two bytes whatever ``version`` says)."""
    h = header.encode("latin1")
    h += b" " * (64 - (10 + len(h) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + len(h).to_bytes(2, "little") + h + data
