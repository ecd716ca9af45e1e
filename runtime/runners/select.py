"""Which backend runs the graphs, and opening a runner on it.

``select_backend`` resolves ``backend`` and ``device`` up front, with a clear error when this
machine cannot do it; ``open_runner`` opens one graph of a models folder on the chosen backend.
Backends are imported only when opened (ONNX Runtime's GPU providers, TensorRT).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ModelError
from runtime.models_folder import onnx_file
from runtime.profiles import DEFAULT_MAX_SECONDS
from runtime.runners.base import INSTALL_ORT_GPU, Runner

BACKENDS = ("auto", "onnxruntime", "onnxruntime-trt", "tensorrt")
# "gpu" is the same as "cuda" (Triton's word for it; 'cmp-face triton-repo --device gpu').
DEVICE_VALUES = "auto, cpu, cuda, cuda:N or gpu"
_DEVICE = re.compile(r"^(?P<kind>auto|cpu|cuda|gpu)(?::(?P<id>\d+))?$")


@dataclass(frozen=True)
class Backend:
    """A resolved backend: ``name`` in BACKENDS (not "auto"), ``device`` "cpu" or "cuda"."""

    name: str
    device: str
    device_id: int = 0

    def __str__(self) -> str:
        return f"{self.name} on {self.device}" + (f":{self.device_id}" if self.device == "cuda" else "")


def parse_device(device: str) -> tuple[str, int]:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or ``"gpu"``, ``"gpu:N"``) -> (kind, index)."""
    match = _DEVICE.match(str(device))
    if match is None or (match["id"] is not None and match["kind"] not in ("cuda", "gpu")):
        raise ModelError(f"unknown device {device!r}: choose {DEVICE_VALUES}")
    kind = "cuda" if match["kind"] == "gpu" else match["kind"]
    return kind, int(match["id"] or 0)


def ort_providers() -> list[str]:
    """The execution providers this onnxruntime build offers."""
    import onnxruntime as ort

    return ort.get_available_providers()


def tensorrt_available() -> bool:
    from runtime.runners.cuda import tensorrt_available as available

    return available()


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
        from runtime.runners.cuda import cuda_runtime, import_tensorrt

        import_tensorrt()
        cuda_runtime()
        return Backend("tensorrt", "cuda", index)
    if kind == "cpu":
        return Backend("onnxruntime", "cpu")
    available = ort_providers()
    if backend == "onnxruntime-trt":
        if "TensorrtExecutionProvider" not in available:
            raise ModelError("backend 'onnxruntime-trt' needs onnxruntime-gpu with its TensorrtExecutionProvider "
                             f"(available: {', '.join(available)}); {INSTALL_ORT_GPU}, and TensorRT 10, which that "
                             "provider loads: pip install --extra-index-url https://pypi.nvidia.com 'tensorrt-cu13<11'")
        return Backend("onnxruntime-trt", "cuda", index)
    if backend == "auto" and models is not None and any(Path(models).glob("*.engine")) and tensorrt_available():
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
    the Predictor passes what the folder's manifest lists).
    """
    models = Path(models)
    if backend.name == "tensorrt":
        from runtime.runners.trt_runner import TensorRTRunner

        return TensorRTRunner.open(models, graph, precision, backend.device_id, cuda_graphs=True)
    from runtime.runners.ort_runner import OrtRunner, cuda_runner, tensorrt_ep_runner

    path = models / (file or onnx_file(graph, precision))
    if backend.name == "onnxruntime-trt":
        cache = Path(engine_cache) if engine_cache else models / "trt-ep-cache"
        return tensorrt_ep_runner(path, graph, backend.device_id, cache, max_seconds, cuda_graph)
    if backend.device == "cuda":
        return cuda_runner(path, graph, backend.device_id, cuda_graph)
    return OrtRunner.open(path, graph, ["CPUExecutionProvider"], threads, spinning)
