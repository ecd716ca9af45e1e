"""atheris harness: an Open Inference Protocol request body -> runtime.serve.protocol (decompress,
then parse_infer_request) must raise nothing but ProtocolError (the server's 4xx) or our errors,
and what it returns must stay within what the body and the element limit allow.

The first byte picks how the body is sent (its low two bits: 0 all JSON, 1 a JSON header whose
length is the next two bytes, 2 the same gzip-compressed, 3 deflate); the rest is the body.
Not collected by pytest (the name does not start with test_). See README.md here.
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from runtime.errors import CmpError
    from runtime.serve.protocol import ProtocolError, decompress, parse_infer_request

MAX_ELEMENTS = 1 << 16
LIMIT = 1 << 20  # body bytes after decompression


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    mode, header, body = data[0] & 3, str(int.from_bytes(data[1:3], "little")), data[3:]
    try:
        if mode >= 2:
            body = decompress(body, "gzip" if mode == 2 else "deflate", LIMIT)
        request = parse_infer_request(body, None if mode == 0 else header, MAX_ELEMENTS)
    except (ProtocolError, CmpError):
        return
    for name, array in request.inputs.items():
        assert isinstance(name, str) and isinstance(array, np.ndarray), (name, type(array))
        assert array.size <= MAX_ELEMENTS and array.nbytes <= len(body) * 8 + 8, (name, array.shape)
    assert isinstance(request.parameters, dict)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
