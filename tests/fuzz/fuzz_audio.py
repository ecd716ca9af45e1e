"""atheris harness: bytes -> runtime.audio.load_audio must raise nothing but our errors.

Not collected by pytest (the name does not start with test_). See README.md here.
"""
from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports():
    from runtime.audio import load_audio
    from runtime.errors import CmpError

LIMIT = 1 << 20  # keep each input's decoded size small: the fuzzer looks for exceptions, not OOM


def one_input(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncated-file warnings are expected
        try:
            # half the inputs also under a duration limit (2 s: checked on headers and while decoding)
            load_audio(data, max_bytes=LIMIT, max_seconds=2.0 if len(data) % 2 else None)
        except CmpError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
