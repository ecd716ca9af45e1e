"""One table of tensor element types: numpy, ONNX Runtime, TensorRT and the Open Inference Protocol.

Every place that names a tensor type (the runners' TensorInfo, the server's metadata and binary
tensors, the Triton configurations) translates through this table, so they cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    numpy: np.dtype
    onnx: str             # ONNX Runtime's NodeArg.type, e.g. "tensor(float)"
    protocol: str         # Open Inference Protocol (KServe v2) datatype, e.g. "FP32"
    tensorrt: str | None  # trt.DataType name, e.g. "FLOAT" (None: not exchanged with engines)

    @property
    def triton(self) -> str:
        """Triton's ``config.pbtxt`` data type, e.g. ``TYPE_FP32``."""
        return f"TYPE_{self.protocol}"


TABLE = tuple(DType(np.dtype(n), o, p, t) for n, o, p, t in (
    (np.bool_, "tensor(bool)", "BOOL", "BOOL"),
    (np.uint8, "tensor(uint8)", "UINT8", "UINT8"),
    (np.uint16, "tensor(uint16)", "UINT16", None),
    (np.uint32, "tensor(uint32)", "UINT32", None),
    (np.uint64, "tensor(uint64)", "UINT64", None),
    (np.int8, "tensor(int8)", "INT8", "INT8"),
    (np.int16, "tensor(int16)", "INT16", None),
    (np.int32, "tensor(int32)", "INT32", "INT32"),
    (np.int64, "tensor(int64)", "INT64", "INT64"),
    (np.float16, "tensor(float16)", "FP16", "HALF"),
    (np.float32, "tensor(float)", "FP32", "FLOAT"),
    (np.float64, "tensor(double)", "FP64", None),
))
BY_NUMPY = {d.numpy: d for d in TABLE}
BY_ONNX = {d.onnx: d for d in TABLE}
BY_PROTOCOL = {d.protocol: d for d in TABLE}
BY_TENSORRT = {d.tensorrt: d for d in TABLE if d.tensorrt}


def of_numpy(dtype) -> DType:
    """The row of a numpy dtype (either byte order); KeyError for types we do not exchange."""
    return BY_NUMPY[np.dtype(dtype).newbyteorder("=")]
