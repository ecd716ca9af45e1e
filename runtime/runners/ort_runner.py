"""ONNX Runtime runners: the CPU provider, the CUDA provider with IOBinding, the TensorRT provider.

Sessions are opened by ``runtime.runners.loaders.open_session`` (our errors for missing or broken
files, no idle spinning). On a GPU, inputs are bound from host memory and copied to the device
once per run; outputs are bound on the device and fetched once at the end (``IOBinding``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from runtime.dtypes import BY_ONNX
from runtime.errors import InputError, ModelError
from runtime.profiles import contract_inputs, derive_profiles
from runtime.runners.base import INSTALL_ORT_GPU, Runner, TensorInfo
from runtime.runners.loaders import open_session


def tensor_infos(args) -> tuple[TensorInfo, ...]:
    """TensorInfo of ONNX Runtime NodeArgs (``session.get_inputs()`` / ``get_outputs()``)."""
    infos = []
    for a in args:
        if a.type not in BY_ONNX:
            raise ModelError(f"unsupported tensor type {a.type} of {a.name!r}")
        shape = tuple(d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else "?") for d in a.shape)
        infos.append(TensorInfo(a.name, BY_ONNX[a.type].numpy, shape))
    return tuple(infos)


class OrtRunner(Runner):
    """``session.run`` with host arrays: what the CPU provider needs (no copies to bind)."""

    backend = "onnxruntime"

    def __init__(self, session, path: str | Path, graph: str) -> None:
        """A runner around an open session (:func:`runtime.runners.loaders.open_session`)."""
        self.path, self.graph, self.session = Path(path), graph, session
        self.inputs = tensor_infos(session.get_inputs())
        self.outputs = tensor_infos(session.get_outputs())

    @classmethod
    def open(cls, path: Path, graph: str, providers: list, threads: int | None = None,
             spinning: bool = False) -> "OrtRunner":
        return cls(open_session(Path(path), providers, threads, spinning), path, graph)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        feeds = self.checked_feeds(feeds)
        names = self.output_names(outputs)
        return dict(zip(names, self.session.run(names, feeds)))

    @property
    def closed(self) -> bool:
        return self.session is None

    def close(self) -> None:
        self.session = None


class BoundOrtRunner(OrtRunner):
    """IOBinding on ``device_type`` ("cuda"; "cpu" runs the same code without a GPU).

    ``cuda_graph``: the session was opened with ``enable_cuda_graph``: ONNX Runtime captures the
    first run and replays it, which needs the same shapes and the same buffer addresses every
    time. So the first run allocates device buffers for its shapes and binds them once; later
    runs copy the new inputs into those buffers in place; another input shape is refused.
    """

    def __init__(self, session, path: str | Path, graph: str, device_type: str = "cuda", device_id: int = 0,
                 cuda_graph: bool = False, backend: str = "onnxruntime") -> None:
        super().__init__(session, path, graph)
        self.backend = backend
        self.device_type, self.device_id, self.cuda_graph = device_type, device_id, cuda_graph
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._binding = None
        self._in: dict = {}
        self._out: dict = {}

    @classmethod
    def open(cls, path: Path, graph: str, providers: list, device_type: str = "cuda", device_id: int = 0,
             cuda_graph: bool = False, backend: str = "onnxruntime") -> "BoundOrtRunner":
        runner = cls(open_session(Path(path), providers), path, graph, device_type, device_id, cuda_graph, backend)
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        running = runner.session.get_providers()
        if wanted not in running:  # ONNX Runtime falls back to the CPU with only a warning
            raise ModelError(f"{path}: ONNX Runtime could not start its {wanted} (running on "
                             f"{', '.join(running)}); are the CUDA 13 libraries and cuDNN 9 installed? {INSTALL_ORT_GPU}")
        if cuda_graph:
            for o in runner.outputs:
                if any(isinstance(d, str) for d in o.shape[1:]):
                    raise ModelError(f"{graph}: output {o.name!r} has dims {o.shape}; a CUDA graph needs outputs "
                                     "whose shape follows from the batch size alone")
        return runner

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        feeds = self.checked_feeds(feeds)
        names = self.output_names(outputs)
        if self.cuda_graph:
            values = self._run_fixed(feeds)
            return {n: values[n] for n in names}
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)  # copied to the device once, during the run
        for name in names:
            binding.bind_output(name, self.device_type, self.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))  # one device->host copy per output

    def _run_fixed(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnxruntime import OrtValue

        shapes = {n: a.shape for n, a in feeds.items()}
        if self._shapes is None:
            batch = next(iter(shapes.values()))[0]
            binding = self.session.io_binding()
            for name, array in feeds.items():  # our own buffers: never the caller's arrays
                self._in[name] = OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype.type,
                                                                       self.device_type, self.device_id)
                binding.bind_ortvalue_input(name, self._in[name])
            for o in self.outputs:
                shape = [batch if isinstance(d, str) else d for d in o.shape]
                self._out[o.name] = OrtValue.ortvalue_from_shape_and_type(shape, o.dtype.type, self.device_type,
                                                                          self.device_id)
                binding.bind_ortvalue_output(o.name, self._out[o.name])
            self._binding, self._shapes = binding, shapes
        if shapes != self._shapes:
            raise InputError(f"{self.graph}: this runner replays a CUDA graph captured for input shapes "
                             f"{self._shapes}, got {shapes}; CUDA graphs need fixed shapes (open the runner "
                             "without cuda_graph for inputs of varying length)")
        for name, array in feeds.items():
            self._in[name].update_inplace(array)  # same address every run: the graph stays valid
        self.session.run_with_iobinding(self._binding)
        values = {name: value.numpy() for name, value in self._out.items()}  # device -> host, once each
        if self.device_type == "cpu":  # there .numpy() is a view of our buffer, rewritten by the next run
            values = {name: v.copy() for name, v in values.items()}
        return values

    def close(self) -> None:
        self._binding, self._in, self._out = None, {}, {}
        super().close()


def cuda_runner(path: Path, graph: str, device_id: int = 0, cuda_graph: bool = False) -> BoundOrtRunner:
    import onnxruntime as ort

    # onnxruntime-gpu >= 1.21 can load the CUDA and cuDNN libraries of the nvidia-* wheels (or of
    # torch) itself; without it they must be on the loader's path. Not run here: no GPU.
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    # HEURISTIC: the default EXHAUSTIVE search benchmarks cuDNN's algorithms on the first run of
    # every new input shape, and our utterances come in every length.
    options = {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}
    if cuda_graph:
        options["enable_cuda_graph"] = True
    providers = [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    return BoundOrtRunner.open(path, graph, providers, "cuda", device_id, cuda_graph)


def profile_strings(graph: str, max_seconds: float) -> dict[str, str]:
    """The TensorRT provider's ``trt_profile_{min,opt,max}_shapes``: our two profiles, listed one after
    the other for the same input (the provider's format for several profiles, as documented by
    ONNX Runtime; not verified on a GPU here)."""
    profiles = derive_profiles(graph, contract_inputs(graph), max_seconds)
    out = {}
    for key in ("min", "opt", "max"):
        out[f"trt_profile_{key}_shapes"] = ",".join(
            f"{name}:{'x'.join(map(str, getattr(r, key)))}" for p in profiles for name, r in p.shapes.items())
    return out


def tensorrt_ep_runner(path: Path, graph: str, device_id: int, cache: Path, max_seconds: float,
                       cuda_graph: bool = False) -> BoundOrtRunner:
    """ONNX Runtime's TensorRT provider: engines built on first use and cached in ``cache``.

    The PyPI provider links TensorRT 10 and builds weakly typed networks, so the FP16/INT8 flags
    are left off: the precision comes from the ONNX file (DEPLOY-NOTES B, F). Measure its output
    against the CPU: only a native strongly typed engine guarantees the graph's types.
    """
    cache.mkdir(parents=True, exist_ok=True)
    options = {"device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
               "trt_builder_optimization_level": 3, "trt_max_workspace_size": 4 << 30,
               **profile_strings(graph, max_seconds)}
    if cuda_graph:
        options["trt_cuda_graph_enable"] = True
    providers = [("TensorrtExecutionProvider", options), ("CUDAExecutionProvider", {"device_id": device_id}),
                 "CPUExecutionProvider"]
    runner = BoundOrtRunner.open(path, graph, providers, "cuda", device_id, cuda_graph, backend="onnxruntime-trt")
    if [(i.name, len(i.shape)) for i in runner.inputs] != [(n, len(d)) for n, d in contract_inputs(graph)]:
        raise ModelError(f"{path}: inputs {[i.name for i in runner.inputs]} differ from what {graph} takes")
    return runner
