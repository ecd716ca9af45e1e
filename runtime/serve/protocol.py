"""The Open Inference Protocol (KServe v2) REST encoding: JSON tensors and the binary tensor
extension. No web framework here: bytes in, arrays out, and back.

A request body is a JSON header, optionally followed by raw tensor bytes; the header's length
is the ``Inference-Header-Content-Length`` HTTP header (absent: the whole body is JSON). An
input with ``parameters.binary_data_size`` takes its values from the bytes after the header,
in input order, little-endian, C order. An output is sent as raw bytes when the request asks
for it (``outputs[i].parameters.binary_data`` or the request parameter ``binary_data_output``).
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from runtime.dtypes import BY_PROTOCOL, of_numpy

# The v2 datatypes are runtime.dtypes' (BYTES, i.e. strings, is not used by our models).
HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(Exception):
    """A request we answer with ``status`` and the protocol's ``{"error": message}`` body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def __reduce__(self):  # raised in the server's worker processes, answered by the main one
        return type(self), (self.status, self.message, self.headers)


def bad_request(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib) request body, refused once it inflates beyond ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise bad_request(f"the {encoding} request body cannot be decompressed ({exc})") from None
    if len(data) > limit:
        raise ProtocolError(413, f"the {encoding} request body inflates beyond this server's limit of {limit} bytes")
    if not inflater.eof:
        raise bad_request(f"the {encoding} request body is truncated")
    return data


def datatype_of(dtype: np.dtype) -> str:
    return of_numpy(dtype).protocol


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    parameters: dict
    outputs: list[str] | None                      # None: all of the model's outputs
    binary: dict[str, bool] = field(default_factory=dict)  # per requested output


MAX_DIMS = 8            # our tensors have 2 or 3
MAX_DIM = (1 << 31) - 1  # one dimension (numpy refuses shapes whose product overflows int64)


def _shape(value, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise bad_request(f"input '{name}': 'shape' must be a list of integers")
    if len(value) > MAX_DIMS:
        raise bad_request(f"input '{name}': shape has {len(value)} dimensions, at most {MAX_DIMS} are accepted")
    if any(d < 0 for d in value):
        raise bad_request(f"input '{name}': negative dimension in shape {_short(value)}")
    if any(d > MAX_DIM for d in value):
        raise bad_request(f"input '{name}': dimension {_short(max(value))} in shape is larger than {MAX_DIM}")
    return tuple(value)


def _short(value) -> str:
    """A client's value for a message, cut to a readable length."""
    text = str(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def number_param(value, name: str) -> float:
    """A request parameter that must be a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"parameter '{name}' must be a number, got {_short(repr(value))}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise bad_request(f"parameter '{name}' must be a finite number, got {_short(value)}")
    return number


def json_bytes_bound(values: int) -> int:
    """At most how many bytes ``values`` numbers take in a JSON answer (a float32 as a Python
    float: up to 24 characters, and a separator)."""
    return 25 * values + 1024


def _json_values(data, dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad_request(f"input '{name}': 'data' is not a list of {np.dtype(dtype).name} values ({exc})") from None
    if array.size != count:
        raise bad_request(f"input '{name}': 'data' holds {array.size} values, shape {list(shape)} needs {count}")
    return array.reshape(shape)


#: Lists, objects and strings a request's JSON may hold. json.loads spends ~60 bytes on each of
#: them (a 32 MiB body of ``[],`` would take ~900 MB); numbers, what tensor data is made of, cost
#: at most ~9 times their text, and a valid request has a few thousand containers at most (one
#: list per row of nested data).
MAX_JSON_CONTAINERS = 1 << 20


def _check_json_structure(head: bytes) -> None:
    """413 before parsing when ``head`` holds more containers than :data:`MAX_JSON_CONTAINERS`
    (brackets and quotes inside strings count too: an upper bound)."""
    found = head.count(b"[") + head.count(b"{") + head.count(b'"') // 2
    if found > MAX_JSON_CONTAINERS:
        raise ProtocolError(413, f"the request's JSON holds {found} lists, objects and strings, the limit is "
                                 f"{MAX_JSON_CONTAINERS}: send tensor data as flat 'data' lists or as binary data")


def parse_infer_request(body: bytes, header_length: str | None, max_elements: int) -> InferRequest:
    """Decode an infer request; every problem is a 400 ``ProtocolError``. ``max_elements``
    bounds what a declared shape may make us allocate (JSON data is bounded by the body)."""
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise bad_request(f"{HEADER_LENGTH} is not an integer: {_short(repr(header_length))}") from None
        if not 0 < n <= len(body):
            raise bad_request(f"{HEADER_LENGTH} {_short(n)} does not fit the {len(body)}-byte body")
        head, rest = body[:n], memoryview(body)[n:]
    _check_json_structure(head)
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise bad_request(f"the request header is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise bad_request("the request must be a JSON object")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_request("'parameters' must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_request("the request has no 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in raw_inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise bad_request("each input must be an object with a 'name'")
        name = tensor["name"]
        if name in inputs:
            raise bad_request(f"input '{name}' is given twice")
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in BY_PROTOCOL:
            raise bad_request(f"input '{name}': unsupported datatype {_short(repr(datatype))}")
        dtype = BY_PROTOCOL[datatype].numpy.newbyteorder("<")
        shape = _shape(tensor.get("shape"), name)
        count = math.prod(shape)
        if count > max_elements:
            raise ProtocolError(413, f"input '{name}': shape {list(shape)} has {count} values, "
                                     f"the limit is {max_elements}")
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size != count * dtype.itemsize:
                raise bad_request(f"input '{name}': binary_data_size {size!r} does not match shape "
                                  f"{list(shape)} of {datatype} ({count * dtype.itemsize} bytes)")
            if offset + size > len(rest):
                raise bad_request(f"input '{name}': the body ends before its {size} bytes of binary data")
            array = np.frombuffer(rest[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
        elif "data" in tensor:
            array = _json_values(tensor["data"], dtype, shape, name)
        else:
            raise bad_request(f"input '{name}' has neither 'data' nor binary_data_size")
        inputs[name] = array.astype(dtype.newbyteorder("="), copy=False)
    if offset != len(rest):
        raise bad_request(f"the body holds {len(rest) - offset} bytes of binary data no input claims")
    default_binary = parameters.get("binary_data_output") is True
    outputs, binary = None, {}
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise bad_request("'outputs' must be a list")
        outputs = []
        for tensor in raw_outputs:
            if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
                raise bad_request("each requested output must be an object with a 'name'")
            p = tensor.get("parameters") or {}
            outputs.append(tensor["name"])
            binary[tensor["name"]] = bool(p.get("binary_data", default_binary)) if isinstance(p, dict) else default_binary
    request_id = doc.get("id")
    return InferRequest(request_id if isinstance(request_id, str) else None, inputs, parameters, outputs,
                        binary or {"*": default_binary})


def encode_infer_response(model: str, request: InferRequest, outputs: dict[str, np.ndarray],
                          warnings: list[str] | None = None) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (``Inference-Header-Content-Length`` when any
    output travels as binary data). ``warnings`` (e.g. speech too short to say much) go in the
    response's ``parameters``."""
    entries, blobs = [], []
    for name, array in outputs.items():
        entry = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if request.binary.get(name, request.binary.get("*", False)):
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    doc = {"model_name": model, "model_version": "1", "outputs": entries}
    if warnings:
        doc["parameters"] = {"warnings": list(warnings)}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return b"".join([head, *blobs]), {HEADER_LENGTH: str(len(head)), "content-type": "application/octet-stream"}
