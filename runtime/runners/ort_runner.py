"""ONNX Runtime runners: the CPU provider, the CUDA provider with IOBinding, the TensorRT provider.

Sessions are opened by ``runtime.runners.loaders.open_session`` (our errors for missing or broken
files, no idle spinning). On a GPU, inputs are bound from host memory and copied to the device
once per run; outputs are bound on the device and fetched once at the end (``IOBinding``).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from runtime.dtypes import BY_ONNX
from runtime.errors import InputError, ModelError
from runtime.profiles import contract_inputs, derive_profiles
from runtime.runners.base import INSTALL_ORT_GPU, Runner, TensorInfo
from runtime.runners.loaders import open_session
from runtime.stages import Stages


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

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            clock: Stages | None = None) -> dict[str, np.ndarray]:
        feeds = self.checked_feeds(feeds)
        names = self.output_names(outputs)
        return dict(zip(names, self.session.run(names, feeds)))

    @property
    def closed(self) -> bool:
        return self.session is None

    def close(self) -> None:
        self.session = None


SHAPE_CACHE = 4  # fixed-shape sessions kept per runner (each holds its own copy of the weights on the device)


@dataclass
class _FixedShape:
    """A session whose symbolic dims are fixed to one input shape, and its bound buffers."""

    session: object
    binding: object
    inputs: dict
    outputs: dict


class BoundOrtRunner(OrtRunner):
    """IOBinding on ``device_type`` ("cuda"; "cpu" runs the same code without a GPU).

    ``cuda_graph``: one session per exact input shape, opened with that shape's symbolic dims fixed
    (``add_free_dimension_override_by_name``), so ONNX Runtime folds all the shape arithmetic and
    every node lands on the device; the session's provider options then enable its CUDA graph,
    captured on the first run and replayed after, which needs the same buffer addresses every
    time: each shape gets its own device buffers, bound once, inputs copied into them in place.
    The :data:`SHAPE_CACHE` most recent shapes are kept (a server that sees a few fixed lengths);
    another shape opens a session of its own (seconds), so this is for fixed-length serving.
    Shapes are never padded to share a graph: that would change the encoder's mean over time.
    """

    def __init__(self, session, path: str | Path, graph: str, device_type: str = "cuda", device_id: int = 0,
                 cuda_graph: bool = False, backend: str = "onnxruntime", providers: list | None = None) -> None:
        super().__init__(session, path, graph)
        self.backend = backend
        self.device_type, self.device_id, self.cuda_graph = device_type, device_id, cuda_graph
        self.providers = providers or session.get_providers()
        self._fixed: OrderedDict[tuple, _FixedShape] = OrderedDict()
        if cuda_graph:  # the session above gave the signature; each shape opens its own
            self.session = _SIGNATURE_ONLY

    @classmethod
    def open(cls, path: Path, graph: str, providers: list, device_type: str = "cuda", device_id: int = 0,
             cuda_graph: bool = False, backend: str = "onnxruntime") -> "BoundOrtRunner":
        if cuda_graph:  # the signature only: ONNX Runtime refuses a graph capture on symbolic shapes
            runner = cls(open_session(Path(path), ["CPUExecutionProvider"]), path, graph, device_type, device_id,
                         cuda_graph, backend, providers)
        else:
            runner = cls(open_session(Path(path), providers), path, graph, device_type, device_id, cuda_graph,
                         backend, providers)
            _check_provider(runner.session, providers, path)
        return runner

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            clock: Stages | None = None) -> dict[str, np.ndarray]:
        """Copy the feeds to the device (``h2d``), run (``graph``: ONNX Runtime synchronises its
        stream at the end of a run), copy the outputs back (``d2h``), each lapped on ``clock``."""
        from onnxruntime import OrtValue

        feeds = self.checked_feeds(feeds)
        names = self.output_names(outputs)
        clock = clock if clock is not None else Stages()
        if self.cuda_graph:
            values = self._run_fixed(feeds, clock)
            return {n: values[n] for n in names}
        clock.restart()  # the checks above are not a copy
        binding = self.session.io_binding()
        on_device = {name: OrtValue.ortvalue_from_numpy(array, self.device_type, self.device_id)
                     for name, array in feeds.items()}  # one host->device copy per input
        for name, value in on_device.items():
            binding.bind_ortvalue_input(name, value)
        for name in names:
            binding.bind_output(name, self.device_type, self.device_id)
        clock.lap("h2d")
        self.session.run_with_iobinding(binding)
        clock.lap("graph")
        values = dict(zip(names, binding.copy_outputs_to_cpu()))  # one device->host copy per output
        clock.lap("d2h")
        return values

    def fixed_dims(self, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
        """The value of every symbolic dim of the inputs for these feeds (one name, one value)."""
        dims: dict[str, int] = {}
        for info in self.inputs:
            for dim, size in zip(info.shape, feeds[info.name].shape):
                if isinstance(dim, str):
                    if dims.setdefault(dim, int(size)) != size:
                        raise InputError(f"{self.graph}: dimension {dim!r} is {dims[dim]} in one input and {size} in "
                                         "another")
        return dims

    def _entry(self, feeds: dict[str, np.ndarray]) -> _FixedShape:
        from onnxruntime import OrtValue

        key = tuple((n, a.shape) for n, a in sorted(feeds.items()))
        entry = self._fixed.get(key)
        if entry is not None:
            self._fixed.move_to_end(key)
            return entry
        session = open_session(self.path, self.providers, free_dims=self.fixed_dims(feeds))
        _check_provider(session, self.providers, self.path)
        binding = session.io_binding()
        inputs, outputs = {}, {}
        for name, array in feeds.items():  # our own buffers: never the caller's arrays
            inputs[name] = OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype.type, self.device_type,
                                                                 self.device_id)
            binding.bind_ortvalue_input(name, inputs[name])
        for info, arg in zip(self.outputs, session.get_outputs()):
            if not all(isinstance(d, int) and d > 0 for d in arg.shape):  # fixed inputs fix every output here
                raise ModelError(f"{self.graph}: output {arg.name!r} keeps dims {arg.shape} with its inputs fixed to "
                                 f"{dict(key)}; a CUDA graph needs every shape known in advance")
            outputs[info.name] = OrtValue.ortvalue_from_shape_and_type(arg.shape, info.dtype.type, self.device_type,
                                                                       self.device_id)
            binding.bind_ortvalue_output(info.name, outputs[info.name])
        self._fixed[key] = entry = _FixedShape(session, binding, inputs, outputs)
        while len(self._fixed) > SHAPE_CACHE:
            self._fixed.popitem(last=False)  # its session and buffers go with it
        return entry

    def _run_fixed(self, feeds: dict[str, np.ndarray], clock: Stages) -> dict[str, np.ndarray]:
        entry = self._entry(feeds)  # a new shape opens its session here: not a copy
        clock.restart()
        for name, array in feeds.items():
            entry.inputs[name].update_inplace(array)  # same address every run: the graph stays valid
        clock.lap("h2d")
        entry.session.run_with_iobinding(entry.binding)
        clock.lap("graph")
        values = {name: value.numpy() for name, value in entry.outputs.items()}  # device -> host, once each
        if self.device_type == "cpu":  # there .numpy() is a view of our buffer, rewritten by the next run
            values = {name: v.copy() for name, v in values.items()}
        clock.lap("d2h")
        return values

    @property
    def shapes(self) -> list[tuple]:
        """The input shapes with a fixed-shape session now, oldest first."""
        return list(self._fixed)

    def close(self) -> None:
        self._fixed.clear()
        super().close()


_SIGNATURE_ONLY = object()  # a cuda_graph runner runs no session of its own: each shape has one


def _check_provider(session, providers: list, path: Path) -> None:
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    running = session.get_providers()
    if wanted not in running:  # ONNX Runtime falls back to the CPU with only a warning
        raise ModelError(f"{path}: ONNX Runtime could not start its {wanted} (running on "
                         f"{', '.join(running)}); are the CUDA 13 libraries and cuDNN 9 installed? {INSTALL_ORT_GPU}")


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
