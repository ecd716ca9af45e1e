"""One small interface over every backend (Polygraphy's split: what loads a model vs what runs it).

A runner runs one graph of a models folder (``encoder``, ``decoder_<pipeline>``,
``voice2mesh_<pipeline>``, ``frontend``)::

    backend = select_backend("auto", "cuda", models)        # which backend, checked up front
    with open_runner(models, "encoder", backend, "fp16") as runner:
        runner.inputs                                        # (TensorInfo(name, dtype, shape), ...)
        out = runner.run({"fbank": fbank})                   # {"embedding": array}

Implementations: ONNX Runtime on the CPU, ONNX Runtime CUDA with IOBinding (optionally a CUDA
graph for fixed shapes), ONNX Runtime's TensorRT execution provider, and native TensorRT engines
(``runtime/runners/trt_runner.py``). The caller never needs to know which one it holds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from runtime.errors import InputError, ModelError
from runtime.profiles import DEFAULT_MAX_SECONDS

BACKENDS = ("auto", "onnxruntime", "onnxruntime-trt", "tensorrt")
_DEVICE = re.compile(r"^(?P<kind>auto|cpu|cuda)(?::(?P<id>\d+))?$")
INSTALL_ORT_GPU = "install onnxruntime-gpu (see README, GPU)"


@dataclass(frozen=True)
class TensorInfo:
    """An input or output of a runner: symbolic dims are strings (e.g. "batch")."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]


class Runner:
    """Base class: ``run(feeds) -> {output name: array}``, ``close()``, context manager."""

    graph: str = ""
    backend: str = ""
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds checked against ``inputs``: exact names, same kind of dtype, rank and static dims;
        returned C-contiguous in the input's dtype."""
        if self.closed:
            raise ModelError(f"{self.graph}: this {self.backend} runner is closed")
        names = [i.name for i in self.inputs]
        if set(feeds) != set(names):
            raise InputError(f"{self.graph} takes inputs {', '.join(names)}; got {', '.join(feeds) or 'none'}")
        checked = {}
        for info in self.inputs:
            a = np.asarray(feeds[info.name])
            if a.dtype.kind != info.dtype.kind and not (a.dtype.kind in "iu" and info.dtype.kind == "f"):
                raise InputError(f"{self.graph}: input {info.name!r} must be {info.dtype}, got {a.dtype}")
            static = [(k, d) for k, d in enumerate(info.shape) if isinstance(d, int) and d > 0]
            if a.ndim != len(info.shape) or any(a.shape[k] != d for k, d in static):
                want = "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in info.shape)
                raise InputError(f"{self.graph}: input {info.name!r} has shape {'x'.join(map(str, a.shape))}, "
                                 f"expected {want}")
            checked[info.name] = np.ascontiguousarray(a, dtype=info.dtype)
        return checked

    def _output_names(self, outputs: Sequence[str] | None) -> list[str]:
        known = [o.name for o in self.outputs]
        if outputs is None:
            return known
        unknown = [n for n in outputs if n not in known]
        if unknown:
            raise InputError(f"{self.graph} has no output {', '.join(unknown)} (outputs: {', '.join(known)})")
        return list(outputs)


@dataclass(frozen=True)
class Backend:
    """A resolved backend: ``name`` in BACKENDS (not "auto"), ``device`` "cpu" or "cuda"."""

    name: str
    device: str
    device_id: int = 0

    def __str__(self) -> str:
        return f"{self.name} on {self.device}" + (f":{self.device_id}" if self.device == "cuda" else "")


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` -> (kind, index)."""
    match = _DEVICE.match(str(device))
    if match is None or (match["id"] is not None and match["kind"] != "cuda"):
        raise ModelError(f"unknown device {device!r}: choose auto, cpu, cuda or cuda:N")
    return match["kind"], int(match["id"] or 0)


def _ort_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def _tensorrt_available() -> bool:
    from runtime.engines import cuda_runtime, import_tensorrt
    from runtime.errors import EngineError

    try:
        import_tensorrt()
        cuda_runtime()
    except EngineError:
        return False
    return True


def select_backend(backend: str = "auto", device: str = "auto", models: str | Path | None = None) -> Backend:
    """Resolve ``backend`` and ``device``, with a clear error when this machine cannot do it.

    ``auto``: on the CPU, ONNX Runtime; otherwise native TensorRT when TensorRT and cuda-python are
    installed and ``models`` holds engines, else ONNX Runtime CUDA when onnxruntime-gpu is installed,
    else (device "auto" only) the CPU. ONNX Runtime's TensorRT provider is never chosen
    automatically: it builds its engines on first use, which takes minutes.
    """
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    kind, index = parse_device(device)
    if backend in ("tensorrt", "onnxruntime-trt") and kind == "cpu":
        raise ModelError(f"backend {backend!r} runs on a GPU: use device 'cuda' or 'cuda:N' "
                         "(or backend 'onnxruntime' on the CPU)")
    if backend == "tensorrt":
        from runtime.engines import cuda_runtime, import_tensorrt

        import_tensorrt()
        cuda_runtime()
        return Backend("tensorrt", "cuda", index)
    if kind == "cpu":
        return Backend("onnxruntime", "cpu")
    available = _ort_providers()
    if backend == "onnxruntime-trt":
        if "TensorrtExecutionProvider" not in available:
            raise ModelError("backend 'onnxruntime-trt' needs onnxruntime-gpu with its TensorrtExecutionProvider "
                             f"(available: {', '.join(available)}); {INSTALL_ORT_GPU}, and TensorRT 10, which that "
                             "provider loads: pip install --extra-index-url https://pypi.nvidia.com 'tensorrt-cu13<11'")
        return Backend("onnxruntime-trt", "cuda", index)
    if backend == "auto" and models is not None and any(Path(models).glob("*.engine")) and _tensorrt_available():
        return Backend("tensorrt", "cuda", index)
    if "CUDAExecutionProvider" in available:
        return Backend("onnxruntime", "cuda", index)
    if kind == "auto":
        return Backend("onnxruntime", "cpu")
    raise ModelError(f"device {device!r} requested but this onnxruntime has no CUDAExecutionProvider "
                     f"(available: {', '.join(available)}); {INSTALL_ORT_GPU}")


def open_runner(models: str | Path, graph: str, backend: Backend, precision: str = "fp32", *,
                threads: int | None = None, spinning: bool = False, cuda_graph: bool = False,
                engine_cache: str | Path | None = None, max_seconds: float = DEFAULT_MAX_SECONDS,
                file: str | None = None) -> Runner:
    """A runner for ``graph`` of ``models`` at ``precision`` on ``backend`` (from :func:`select_backend`).

    ``cuda_graph``: ONNX Runtime CUDA replays one CUDA graph (fixed input shapes only; another
    shape is refused); native TensorRT captures one per exact input shape (the default there).
    ``engine_cache``: where ONNX Runtime's TensorRT provider keeps its engines (default
    ``<models>/trt-ep-cache``). ``max_seconds``: that provider's serving limit (native engines
    carry theirs in the sidecar). ``file``: the ONNX file to run (default ``onnx_file(graph, precision)``;
    the Predictor passes what ``models.json`` lists).
    """
    from runtime.engines import onnx_file

    models = Path(models)
    if backend.name == "tensorrt":
        from runtime.runners.trt_runner import TensorRTRunner

        return TensorRTRunner.open(models, graph, precision, backend.device_id, cuda_graphs=True)
    from runtime.runners import ort_runner

    path = models / (file or onnx_file(graph, precision))
    if backend.name == "onnxruntime-trt":
        cache = Path(engine_cache) if engine_cache else models / "trt-ep-cache"
        return ort_runner.tensorrt_ep_runner(path, graph, backend.device_id, cache, max_seconds, cuda_graph)
    if backend.device == "cuda":
        return ort_runner.cuda_runner(path, graph, backend.device_id, cuda_graph)
    return ort_runner.OrtRunner(path, graph, ["CPUExecutionProvider"], threads, spinning)
