"""Loaders: what opens a model for a runner (Polygraphy's split between loading and running).

``open_session`` opens an ONNX Runtime session with our errors for missing or broken files;
native TensorRT engines are found, checked against their sidecar and deserialised by
``runtime.runners.trt_runner.TensorRTRunner.open`` (``runtime.engines`` holds the checks).
"""
from __future__ import annotations

from pathlib import Path

from runtime.errors import ModelError


def open_session(path: Path, providers: list, threads: int | None = None, spinning: bool = False,
                 free_dims: dict[str, int] | None = None):
    """An InferenceSession with our errors for missing or broken files.

    ``spinning=False`` stops ONNX Runtime's idle worker threads from busy-waiting after each
    run: between runs we compute VAD, log-mel and renders in numpy/C++, and on a small CPU the
    spinning threads take those cores (measured on 2 cores: voice -> mesh 31.7 -> 12.6 ms).
    ``free_dims``: symbolic dimensions fixed at session creation (``{"batch": 1, "num_samples":
    61760}``), so that ONNX Runtime folds the shape arithmetic that depends on them.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    for name, value in (free_dims or {}).items():
        options.add_free_dimension_override_by_name(name, int(value))
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime cannot load this model ({first})") from exc
