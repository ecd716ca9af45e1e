"""atheris harness: bytes of an OBJ or xyz file -> runtime.mesh_read must raise nothing but our
errors, and what it returns must be float64 (N, 3) finite vertices (and int32 (M, 3) triangles
within them). The first byte picks the reader (even: ``read_obj`` of ``.obj``, odd: ``read_mesh``
of ``.xyz``); the rest is the file, written to one temporary path per process (in /dev/shm if present).

Not collected by pytest (the name does not start with test_). See README.md here.
"""
from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import numpy as np

    from runtime.errors import CmpError
    from runtime.mesh_read import read_mesh, read_obj

_DIR = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
OBJ = os.path.join(_DIR, "input.obj")
XYZ = os.path.join(_DIR, "input.xyz")


def one_input(data: bytes) -> None:
    if not data:
        return
    path = OBJ if data[0] % 2 == 0 else XYZ
    with open(path, "wb") as fh:
        fh.write(data[1:])
    try:
        if path == OBJ:
            v, t = read_obj(path)
        else:
            v, t = read_mesh(path), None
    except CmpError:
        return
    assert v.dtype == np.float64 and v.ndim == 2 and v.shape[1] == 3 and np.isfinite(v).all()
    if t is not None:
        assert t.dtype == np.int32 and t.ndim == 2 and t.shape[1] == 3
        assert t.size == 0 or (t.min() >= 0 and t.max() < len(v))


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
