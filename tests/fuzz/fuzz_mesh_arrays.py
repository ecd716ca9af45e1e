"""atheris harness: bytes of an ``.npy`` or ``.npz`` file -> runtime.mesh_read.read_mesh (and
``npy_shape``) must raise nothing but our errors, and what it returns must be float64 (N, 3)
finite vertices. The first byte picks the suffix (even: ``.npy``, odd: ``.npz``); the rest is the
file, written to one temporary path per process (in /dev/shm if present). numpy's header parser
and zipfile (pure Python) are instrumented too.

Not collected by pytest (the name does not start with test_). See README.md here.
"""
from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import zipfile  # noqa: F401  (instrumented: the .npz reader)

    import numpy as np
    import numpy.lib.format  # noqa: F401  (instrumented: the .npy header parser)

    from runtime.errors import CmpError
    from runtime.mesh_read import npy_shape, read_mesh

_DIR = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
NPY = os.path.join(_DIR, "input.npy")
NPZ = os.path.join(_DIR, "input.npz")


def one_input(data: bytes) -> None:
    if not data:
        return
    path = NPY if data[0] % 2 == 0 else NPZ
    with open(path, "wb") as fh:
        fh.write(data[1:])
    if path == NPY:
        try:
            shape = npy_shape(path)
            assert type(shape) is tuple and all(type(n) is int and n >= 0 for n in shape), shape
        except CmpError:
            pass
    try:
        v = read_mesh(path)
    except CmpError:
        return
    assert v.dtype == np.float64 and v.ndim == 2 and v.shape[1] == 3 and np.isfinite(v).all()


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
