"""atheris harness: bytes of a .npy file -> runtime.features.load_fbank_file must raise nothing
but our errors (the file is written to one temporary path per process, in /dev/shm if present).

Not collected by pytest (the name does not start with test_). See README.md here.
"""
from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import numpy as np  # noqa: F401  (numpy.lib.format's header parser is what is fuzzed)

    from runtime.errors import CmpError
    from runtime.features import load_fbank_file

LIMIT = 1 << 20
_DIR = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(_DIR, "input.npy")


def one_input(data: bytes) -> None:
    with open(PATH, "wb") as fh:
        fh.write(data)
    try:
        load_fbank_file(PATH, max_bytes=LIMIT)
    except CmpError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
