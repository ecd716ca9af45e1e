"""Native TensorRT runner: engine + execution context + a non-default CUDA stream (cuda-python).

Written against NVIDIA's documented API for TensorRT 10.x/11.x and cuda-python's
``cuda.bindings.runtime`` (DEPLOY-NOTES A.2); not executed here (no GPU, no TensorRT).

Per run: the engine's sidecar profiles pick the optimisation profile (input out of range ->
InputError naming the serving limit); one host->device copy per input, ``set_input_shape`` and
``infer_shapes`` for the output shapes, ``set_tensor_address`` for every tensor,
``execute_async_v3`` on our stream, one device->host copy per output, one stream sync.
CUDA graphs: the first run of an exact input shape enqueues normally (that run's result is
returned; it also flushes TensorRT's deferred shape work), then the same enqueue is captured
into a graph; later runs of that shape replay it, except the first run after a switch of
optimisation profile, which enqueues normally so that TensorRT updates its resources. Graphs live in a small LRU keyed by
(profile, shapes); device buffers only grow and a reallocation drops every graph, since the
addresses are frozen into them. Shapes are never padded to share a graph: padding would change
the encoder's mean over time and the per-filter normalisation.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from runtime.dtypes import BY_TENSORRT
from runtime.engines import Sidecar, find_engine
from runtime.errors import EngineError
from runtime.models_folder import sidecar_file
from runtime.profiles import select_profile
from runtime.runners.base import Runner, TensorInfo
from runtime.runners.cuda import cuda_check, cuda_runtime, current_gpu, import_tensorrt
from runtime.stages import Stages

GRAPH_CACHE = 8  # captured shapes kept per runner


class TensorRTRunner(Runner):
    backend = "tensorrt"

    @classmethod
    def open(cls, models: Path, graph: str, precision: str, device_id: int = 0,
             cuda_graphs: bool = True) -> "TensorRTRunner":
        """Find the engine that fits this GPU and TensorRT (refusing the others before they are
        deserialised) and load it."""
        trt, lean = import_tensorrt()
        # Ask CUDA first: without a usable GPU/driver, TensorRT 11.4's lean Runtime is created with
        # only a logged error and crashes (SIGSEGV) on first use (seen on a GPU-less machine).
        gpu = current_gpu(device_id)
        cuda_check(cuda_runtime().cudaSetDevice(device_id))
        engine, car = find_engine(Path(models), graph, precision, gpu, trt.__version__, lean)
        return cls(trt, engine, car, cuda_graphs)

    def __init__(self, trt, engine_path: Path, sidecar: Sidecar, cuda_graphs: bool = True) -> None:
        self.cudart = cuda_runtime()
        self.graph, self.path, self.sidecar, self.cuda_graphs = sidecar.graph, Path(engine_path), sidecar, cuda_graphs
        self.label = f"TensorRT engine {self.path.name}"
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if sidecar.version_compatible:
            self.runtime.engine_host_code_allowed = True  # the plan carries its own lean runtime
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:  # TensorRT logs why and returns None
            raise EngineError(f"{self.path}: TensorRT could not deserialise it (see its message above); rebuild "
                              f"it with: {sidecar.rebuild}")
        self.context = self.engine.create_execution_context()
        self.stream = cuda_check(self.cudart.cudaStreamCreate())
        self.stream_handle = int(self.stream)  # TensorRT takes the raw cudaStream_t as an integer
        inputs, outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = self.engine.get_tensor_dtype(name)
            if dtype.name not in BY_TENSORRT:  # by name: trt.nptype is not in every runtime package
                raise EngineError(f"{self.path}: tensor {name!r} has type {dtype.name}, which cmp-deploy does not "
                                  "exchange with engines")
            shape = tuple(d if d >= 0 else "?" for d in self.engine.get_tensor_shape(name))
            info = TensorInfo(name, BY_TENSORRT[dtype.name].numpy, shape)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(info)
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._graphs: OrderedDict = OrderedDict()       # (profile, shapes) -> graph exec
        self._profile = 0

    @property
    def closed(self) -> bool:
        return getattr(self, "context", None) is None

    # ------------------------------------------------------------------ memory
    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if nbytes > size:
            if ptr:
                cuda_check(self.cudart.cudaFree(ptr))
            self._drop_graphs()  # they hold the old address
            ptr = int(cuda_check(self.cudart.cudaMalloc(max(nbytes, 1))))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _drop_graphs(self) -> None:
        while self._graphs:
            _, (graph, graph_exec) = self._graphs.popitem(last=False)
            cuda_check(self.cudart.cudaGraphExecDestroy(graph_exec))
            cuda_check(self.cudart.cudaGraphDestroy(graph))

    # ------------------------------------------------------------------ running
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            clock: Stages | None = None) -> dict[str, np.ndarray]:
        # clock: not lapped (the copies and the graph share one stream, synchronised once at the end)
        cudart, ctx, stream = self.cudart, self.context, self.stream
        feeds = self.checked_feeds(feeds)
        names = self.output_names(outputs)
        shapes = {n: a.shape for n, a in feeds.items()}
        profile = select_profile(self.sidecar.profiles, shapes, self.label, self.sidecar.rebuild)
        switched = profile != self._profile
        if switched:
            if not ctx.set_optimization_profile_async(profile, self.stream_handle):
                raise EngineError(f"{self.label}: TensorRT refused optimisation profile {profile}")
            self._profile = profile
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in feeds.items():
            if not ctx.set_input_shape(name, array.shape):
                raise EngineError(f"{self.label}: TensorRT refused shape {array.shape} for {name!r}")
            ptr = self._buffer(name, array.nbytes)
            cuda_check(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, stream))
        missing = ctx.infer_shapes()
        if missing:
            raise EngineError(f"{self.label}: TensorRT cannot infer the shapes of {', '.join(missing)}")
        results = {}
        for info in self.outputs:
            results[info.name] = np.empty(tuple(ctx.get_tensor_shape(info.name)), info.dtype)
            self._buffer(info.name, results[info.name].nbytes)
        for name, (ptr, _) in self._buffers.items():
            ctx.set_tensor_address(name, ptr)
        self._enqueue((profile, tuple(sorted(shapes.items()))), switched)
        for name in names:
            out = results[name]
            cuda_check(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes, d2h, stream))
        cuda_check(cudart.cudaStreamSynchronize(stream))
        return {name: results[name] for name in names}

    def _enqueue(self, key, switched: bool) -> None:
        """Replay the graph of ``key``; else enqueue normally, then capture a graph for ``key``.
        Right after a profile switch TensorRT updates its resources on the next enqueue, so that
        one is never a replay."""
        cudart, stream = self.cudart, self.stream
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            if not switched:
                cuda_check(cudart.cudaGraphLaunch(graph[1], stream))
                return
        if not self.context.execute_async_v3(self.stream_handle):  # also the warm-up before a capture
            raise EngineError(f"{self.label}: TensorRT failed to run (see its message above)")
        if not self.cuda_graphs or graph is not None:
            return
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        cuda_check(cudart.cudaStreamBeginCapture(stream, mode))
        ok = self.context.execute_async_v3(self.stream_handle)  # recorded, not run
        captured = cuda_check(cudart.cudaStreamEndCapture(stream))
        if not ok:
            cuda_check(cudart.cudaGraphDestroy(captured))
            self.cuda_graphs = False  # this engine cannot be captured: keep plain enqueues
            return
        self._graphs[key] = (captured, cuda_check(cudart.cudaGraphInstantiate(captured, 0)))
        if len(self._graphs) > GRAPH_CACHE:
            _, (old, old_exec) = self._graphs.popitem(last=False)
            cuda_check(cudart.cudaGraphExecDestroy(old_exec))
            cuda_check(cudart.cudaGraphDestroy(old))

    def close(self) -> None:
        if getattr(self, "context", None) is None:
            return
        cuda_check(self.cudart.cudaStreamSynchronize(self.stream))
        self._drop_graphs()
        for ptr, _ in self._buffers.values():
            cuda_check(self.cudart.cudaFree(ptr))
        self._buffers = {}
        cuda_check(self.cudart.cudaStreamDestroy(self.stream))
        self.context = self.engine = self.runtime = None

    def __repr__(self) -> str:
        return f"TensorRTRunner({self.path.name}, sidecar {sidecar_file(self.path).name})"
