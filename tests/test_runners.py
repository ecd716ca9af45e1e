"""Runners and backend selection without a GPU: ONNX Runtime runners for real (IOBinding on the
CPU device runs the same code as on CUDA), selection errors, and the native TensorRT runner's
logic (profiles, copies, CUDA-graph capture and replay, LRU, buffers) against stand-ins for
TensorRT and cuda-python that compute with real memory."""
from __future__ import annotations

import ctypes
import enum
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

import runtime.engines
import runtime.runners.cuda
import runtime.runners.select as selection
from export.to_trt import Options
from runtime.errors import EngineError, InputError, ModelError
from runtime.runners import Backend, open_runner, parse_device, select_backend
from runtime.runners.ort_runner import BoundOrtRunner, OrtRunner, cuda_runner, profile_strings
from runtime.runners.trt_runner import GRAPH_CACHE, TensorRTRunner
from tests.helpers.engines import H200, TRT10, make_engine
from tests.helpers.tiny_graphs import write_tiny_models


@pytest.fixture()
def models(tmp_path) -> Path:
    return write_tiny_models(tmp_path / "models")


def reference(models: Path, graph: str, feeds: dict) -> dict:
    session = ort.InferenceSession(str(models / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


# ------------------------------------------------------------------ backend selection
@pytest.fixture()
def no_tensorrt(monkeypatch):
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_lean_bindings"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails


def test_devices_and_backends_are_checked():
    assert parse_device("cuda:3") == ("cuda", 3) and parse_device("cpu") == ("cpu", 0)
    assert parse_device("gpu") == ("cuda", 0) and parse_device("gpu:2") == ("cuda", 2)  # Triton's word for it
    for bad in ("tpu", "cuda:x", "cpu:1", "cuda:", "auto:0"):
        with pytest.raises(ModelError, match=f"^unknown device '{bad}': choose auto, cpu, cuda, cuda:N or gpu$"):
            select_backend("auto", bad)
    with pytest.raises(ModelError) as e:
        select_backend("tvm", "cpu")
    assert str(e.value) == "unknown backend 'tvm': choose one of auto, onnxruntime, onnxruntime-trt, tensorrt"
    for backend in ("tensorrt", "onnxruntime-trt"):
        with pytest.raises(ModelError) as e:
            select_backend(backend, "cpu")
        assert str(e.value) == (f"backend '{backend}' runs on a GPU: use device 'cuda' or 'cuda:N' (or backend "
                                "'onnxruntime' on the CPU)")


def test_missing_gpu_packages_are_named(monkeypatch, no_tensorrt):
    with pytest.raises(EngineError) as e:
        select_backend("tensorrt", "cuda")
    assert str(e.value) == (
        "TensorRT is not installed: running engines needs it: pip install --extra-index-url https://pypi.nvidia.com "
        "tensorrt-cu13 (or use an NGC TensorRT container); for engines built with --version-compatible the lean "
        "runtime is enough: pip install tensorrt-lean-cu13-bindings tensorrt-lean-cu13-libs")
    monkeypatch.setitem(sys.modules, "tensorrt", ModuleType("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime"):  # also when imported earlier
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EngineError, match=r"^cuda-python is not installed: TensorRT engines need it \(pip install "
                                          r"cuda-python\)$"):
        select_backend("tensorrt", "cuda:1")
    monkeypatch.setattr(selection, "ort_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ModelError) as e:
        select_backend("onnxruntime", "cuda")
    assert str(e.value) == ("device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider (available: "
                            "CPUExecutionProvider); install onnxruntime-gpu (see README, GPU)")
    with pytest.raises(ModelError) as e:
        select_backend("onnxruntime-trt", "cuda")
    assert str(e.value) == (
        "backend 'onnxruntime-trt' needs onnxruntime-gpu with its TensorrtExecutionProvider (available: "
        "CPUExecutionProvider); install onnxruntime-gpu (see README, GPU), and TensorRT 10, which that provider "
        "loads: pip install --extra-index-url https://pypi.nvidia.com 'tensorrt-cu13<11'")


def test_auto_picks_what_this_machine_has(monkeypatch, models):
    monkeypatch.setattr(selection, "ort_providers", lambda: ["CPUExecutionProvider"])
    assert select_backend() == Backend("onnxruntime", "cpu")
    assert select_backend("auto", "cpu", models) == Backend("onnxruntime", "cpu")
    with pytest.raises(ModelError, match="^device 'cuda:1' requested but this onnxruntime has no CUDA"):
        select_backend("auto", "cuda:1")
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(selection, "ort_providers", lambda: gpu)
    assert select_backend("auto", "auto", models) == Backend("onnxruntime", "cuda", 0)
    assert select_backend("onnxruntime-trt", "cuda:2") == Backend("onnxruntime-trt", "cuda", 2)
    monkeypatch.setattr(selection, "tensorrt_available", lambda: True)
    assert select_backend("auto", "cuda:1", models) == Backend("onnxruntime", "cuda", 1)  # no engine built yet
    make_engine(models)
    assert select_backend("auto", "cuda:1", models) == Backend("tensorrt", "cuda", 1)
    assert str(Backend("tensorrt", "cuda", 1)) == "tensorrt on cuda:1"
    assert select_backend("auto", "cpu", models) == Backend("onnxruntime", "cpu")


# ------------------------------------------------------------------ ONNX Runtime runners
def test_cpu_runner_metadata_results_and_feed_errors(models):
    with open_runner(models, "decoder_supervised", Backend("onnxruntime", "cpu")) as runner:
        assert isinstance(runner, OrtRunner) and runner.backend == "onnxruntime"
        assert [(i.name, i.dtype, i.shape) for i in runner.inputs] == [("embedding", np.float32, ("batch", 64))]
        assert [(o.name, o.shape) for o in runner.outputs] == [("params", ("batch", 51)),
                                                               ("vertices", ("batch", 5, 3))]
        e = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
        got, want = runner.run({"embedding": e}), reference(models, "decoder_supervised", {"embedding": e})
        assert list(got) == ["params", "vertices"]
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        assert list(runner.run({"embedding": e.astype(np.float64)}, ["vertices"])) == ["vertices"]
        with pytest.raises(InputError, match="^decoder_supervised takes inputs embedding; got fbank$"):
            runner.run({"fbank": e})
        with pytest.raises(InputError, match="^decoder_supervised: input 'embedding' has shape 3x65, expected Nx64$"):
            runner.run({"embedding": np.zeros((3, 65), np.float32)})
        with pytest.raises(InputError, match="^decoder_supervised: input 'embedding' must be float32, got bool$"):
            runner.run({"embedding": np.zeros((3, 64), bool)})
        with pytest.raises(InputError, match=r"^decoder_supervised has no output image \(outputs: params, vertices\)$"):
            runner.run({"embedding": e}, ["image"])
    with pytest.raises(ModelError, match="^decoder_supervised: this onnxruntime runner is closed$"):
        runner.run({"embedding": e})
    with pytest.raises(ModelError, match=r"encoder_fp16\.onnx: model file not found$"):
        open_runner(models, "encoder", Backend("onnxruntime", "cpu"), "fp16")


def test_io_binding_runner_matches_and_its_fixed_shape_mode_replays_in_place(models, monkeypatch):
    import runtime.runners.ort_runner as ort_runner

    e1, e2, e3 = (np.random.default_rng(s).standard_normal((2, 64)).astype(np.float32) for s in (2, 3, 4))
    path = models / "decoder_supervised.onnx"
    bound = BoundOrtRunner.open(path, "decoder_supervised", ["CPUExecutionProvider"], "cpu")
    want1, want2 = (reference(models, "decoder_supervised", {"embedding": e}) for e in (e1, e2))
    for name, value in bound.run({"embedding": e1}).items():
        np.testing.assert_array_equal(value, want1[name])
    fixed = BoundOrtRunner.open(path, "decoder_supervised", ["CPUExecutionProvider"], "cpu", cuda_graph=True)
    kept = e1.copy()
    first = fixed.run({"embedding": e1})
    second = fixed.run({"embedding": e2})  # same session and buffers, new values copied in place
    assert fixed.shapes == [(("embedding", (2, 64)),)]
    for name in want1:  # a session with its shapes fixed computes what the dynamic one does
        np.testing.assert_allclose(first[name], want1[name], rtol=1e-6, atol=1e-6 * np.abs(want1[name]).max())
        np.testing.assert_allclose(second[name], want2[name], rtol=1e-6, atol=1e-6 * np.abs(want2[name]).max())
    np.testing.assert_array_equal(e1, kept)  # the caller's array is never bound or written
    # Another length: a session of its own; the few most recent shapes are kept.
    monkeypatch.setattr(ort_runner, "SHAPE_CACHE", 2)
    one = fixed.run({"embedding": e3[:1]})["vertices"]
    np.testing.assert_allclose(one, reference(models, "decoder_supervised", {"embedding": e3[:1]})["vertices"],
                               rtol=1e-6, atol=1e-6 * np.abs(one).max())
    fixed.run({"embedding": e3})
    fixed.run({"embedding": np.concatenate([e1, e2])})
    assert fixed.shapes == [(("embedding", (2, 64)),), (("embedding", (4, 64)),)]  # (1, 64): the oldest used
    fixed.close()
    with pytest.raises(ModelError, match="^decoder_supervised: this onnxruntime runner is closed$"):
        fixed.run({"embedding": e1})
    # Output dims that follow from the inputs' (frames from samples) are fixed with them.
    write_frontend_like(models)
    frontend = BoundOrtRunner.open(models / "frontend.onnx", "frontend", ["CPUExecutionProvider"], "cpu",
                                   cuda_graph=True)
    samples = np.arange(10, dtype=np.float32)[None]
    assert frontend.run({"samples": samples})["fbank"].shape == (1, 64, 10)
    # An output whose shape depends on the values cannot have buffers bound in advance.
    write_value_dependent(models)
    nonzero = BoundOrtRunner.open(models / "nonzero.onnx", "frontend", ["CPUExecutionProvider"], "cpu",
                                  cuda_graph=True)
    with pytest.raises(ModelError, match=r"^frontend: output 'where' keeps dims \[2, 'count'\] with its inputs fixed to "
                                         r"\{'samples': \(1, 10\)\}; a CUDA graph needs every shape known in advance$"):
        nonzero.run({"samples": samples})


def write_value_dependent(models: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NonZero", ["samples"], ["where"])], "nonzero",
        [helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["batch", "num_samples"])],
        [helper.make_tensor_value_info("where", TensorProto.INT64, [2, "count"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(models / "nonzero.onnx"))


def write_frontend_like(models: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["samples", "axis"], ["wide"]),
         helper.make_node("Expand", ["wide", "shape"], ["fbank"])], "frontend",
        [helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["batch", "num_samples"])],
        [helper.make_tensor_value_info("fbank", TensorProto.FLOAT, ["batch", 64, "frames"])],
        [helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
         helper.make_tensor("shape", TensorProto.INT64, [3], [1, 64, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(models / "frontend.onnx"))


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_bound_runners_lap_the_copies_and_the_graph_and_plain_ones_leave_the_clock_alone(models):
    """A bound runner moves the data itself: h2d, graph and d2h are lapped on the clock given (what
    the GPU check reports per chain); a host-array session laps nothing (its caller times the call)."""
    from runtime.stages import Stages

    e = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)
    path = models / "decoder_supervised.onnx"
    want = reference(models, "decoder_supervised", {"embedding": e})
    for cuda_graph in (False, True):
        clock = Stages()
        runner = BoundOrtRunner.open(path, "decoder_supervised", ["CPUExecutionProvider"], "cpu",
                                     cuda_graph=cuda_graph)
        got = runner.run({"embedding": e}, clock=clock)
        assert list(clock) == ["h2d", "graph", "d2h"] and all(v >= 0 for v in clock.values())
        np.testing.assert_allclose(got["vertices"], want["vertices"], rtol=1e-6,
                                   atol=1e-6 * np.abs(want["vertices"]).max())
    clock = Stages()
    OrtRunner.open(path, "decoder_supervised", ["CPUExecutionProvider"]).run({"embedding": e}, clock=clock)
    assert clock == {}


def test_a_gpu_provider_that_does_not_start_is_an_error(models):
    # This onnxruntime has no CUDA provider: ONNX Runtime would quietly run on the CPU instead.
    with pytest.raises(ModelError) as e:
        cuda_runner(models / "encoder.onnx", "encoder")
    assert str(e.value) == (f"{models}/encoder.onnx: ONNX Runtime could not start its CUDAExecutionProvider "
                            "(running on CPUExecutionProvider); are the CUDA 13 libraries and cuDNN 9 installed? "
                            "install onnxruntime-gpu (see README, GPU)")


def test_tensorrt_provider_profiles_follow_the_graphs():
    assert profile_strings("voice2mesh_unsupervised", 30) == {
        "trt_profile_min_shapes": "samples:1x1,samples:1x1",
        "trt_profile_opt_shapes": "samples:1x160000,samples:8x160000",
        "trt_profile_max_shapes": "samples:1x480000,samples:32x480000"}
    assert profile_strings("decoder_supervised", 60)["trt_profile_max_shapes"] == "embedding:1x64,embedding:32x64"
    with pytest.raises(ModelError, match="^unknown graph 'vocoder'"):
        profile_strings("vocoder", 60)


# ------------------------------------------------------------------ native TensorRT runner, simulated
S = 0


class FakeCudart:
    """cuda-python's runtime calls the runner makes, on host memory; captures record, launches replay."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeGlobal = 0

    def __init__(self) -> None:
        self.memory: dict[int, ctypes.Array] = {}
        self.capture: list | None = None
        self.copies = {1: 0, 2: 0}
        self.launches = self.destroyed = 0

    def cudaGetErrorName(self, err):
        return S, b"cudaErrorInvalidValue"

    def cudaSetDevice(self, device):
        return (S,)

    def cudaGetDeviceProperties(self, device):
        return S, SimpleNamespace(name=b"NVIDIA H200\0\0\0", major=9, minor=0)

    def cudaMalloc(self, nbytes):
        buf = (ctypes.c_char * nbytes)()
        self.memory[ctypes.addressof(buf)] = buf
        return S, ctypes.addressof(buf)

    def cudaFree(self, ptr):
        del self.memory[ptr]
        return (S,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        assert self.capture is None and stream == 7  # copies stay outside graphs, on our stream
        ctypes.memmove(dst, src, nbytes)
        self.copies[int(kind)] += 1
        return (S,)

    def cudaStreamCreate(self):
        return S, 7

    def cudaStreamSynchronize(self, stream):
        return (S,)

    def cudaStreamDestroy(self, stream):
        return (S,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capture = []
        return (S,)

    def cudaStreamEndCapture(self, stream):
        ops, self.capture = self.capture, None
        return S, ("graph", ops)

    def cudaGraphInstantiate(self, graph, flags):
        return S, ("exec", graph[1])

    def cudaGraphLaunch(self, graph_exec, stream):
        self.launches += 1
        for op in graph_exec[1]:
            op()
        return (S,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.destroyed += 1
        return (S,)

    def cudaGraphDestroy(self, graph):
        return (S,)


def fake_tensorrt(cudart: FakeCudart) -> ModuleType:
    """An 'encoder' engine: embedding = mean of fbank over time, read from and written to the
    addresses and shapes set on the context (frozen into a graph when captured)."""
    trt = ModuleType("tensorrt")
    trt.__version__ = TRT10
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
    trt.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
    floats = SimpleNamespace(name="FLOAT")

    class Context:
        def __init__(self) -> None:
            self.shapes, self.addresses, self.profiles, self.executed = {}, {}, [], 0

        def set_optimization_profile_async(self, index, stream):
            self.profiles.append(index)
            return True

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def infer_shapes(self):
            return []

        def get_tensor_shape(self, name):
            return (self.shapes["fbank"][0], 64)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            (b, c, t), src, dst = self.shapes["fbank"], self.addresses["fbank"], self.addresses["embedding"]

            def op():
                x = np.ctypeslib.as_array((ctypes.c_float * (b * c * t)).from_address(src)).reshape(b, c, t)
                out = np.ctypeslib.as_array((ctypes.c_float * (b * c)).from_address(dst)).reshape(b, c)
                out[:] = x.mean(axis=2)
                self.executed += 1

            if cudart.capture is not None:
                cudart.capture.append(op)
            else:
                op()
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("fbank", "embedding")[i]

        def get_tensor_dtype(self, name):
            return floats

        def get_tensor_shape(self, name):
            return (-1, 64, -1) if name == "fbank" else (-1, 64)

        def get_tensor_mode(self, name):
            return "input" if name == "fbank" else "output"

        def create_execution_context(self):
            self.context = Context()
            return self.context

    class Runtime:
        engine_host_code_allowed = False

        def __init__(self, logger) -> None:
            trt.last_runtime = self

        def deserialize_cuda_engine(self, data):
            return Engine() if data.startswith(b"serialized plan") else None

    trt.Runtime = Runtime
    return trt


@pytest.fixture()
def simulated(monkeypatch):
    cudart = FakeCudart()
    trt = fake_tensorrt(cudart)
    monkeypatch.setattr(runtime.runners.cuda, "cuda_runtime", lambda: cudart)
    monkeypatch.setattr("runtime.runners.trt_runner.cuda_runtime", lambda: cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt, cudart


def fbank(batch: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 64, frames)).astype(np.float32)


def test_tensorrt_runner_captures_per_exact_shape_and_replays(models, simulated):
    trt, cudart = simulated
    engine = make_engine(models, gpu=H200, options=Options(precision="fp32", max_seconds=30))
    runner = open_runner(models, "encoder", Backend("tensorrt", "cuda", 0), "fp32")
    assert isinstance(runner, TensorRTRunner) and runner.path == engine
    assert [(i.name, i.shape) for i in runner.inputs] == [("fbank", ("?", 64, "?"))]
    ctx = runner.context
    x = fbank(1, 1000)
    np.testing.assert_array_equal(runner.run({"fbank": x})["embedding"], x.mean(axis=2))
    assert (ctx.executed, len(runner._graphs), cudart.launches) == (1, 1, 0)  # warm-up ran, capture recorded
    y = fbank(1, 1000, seed=1)
    np.testing.assert_array_equal(runner.run({"fbank": y})["embedding"], y.mean(axis=2))
    assert (ctx.executed, cudart.launches) == (2, 1)  # replayed, with the new input copied to the same address
    z = fbank(1, 1001, seed=2)  # one frame more: its own graph, never padded to share one
    np.testing.assert_array_equal(runner.run({"fbank": z})["embedding"], z.mean(axis=2))
    assert len(runner._graphs) == 1 and cudart.destroyed == 1  # the buffer grew: graphs on the old address dropped
    assert cudart.copies == {1: 3, 2: 3}  # one copy in and one out per run
    batch = fbank(5, 1001, seed=3)
    np.testing.assert_array_equal(runner.run({"fbank": batch})["embedding"], batch.mean(axis=2))
    assert ctx.profiles == [1]  # batches > 1 run on the batch32 profile
    destroyed = cudart.destroyed
    for b in range(1, 6):  # ten shapes that fit the buffers: no reallocation, one graph each, LRU of 8
        for frames in (1000, 1001):
            runner.run({"fbank": fbank(b, frames)})
    # 1 graph (5x64x1001) + 8 new ones evicts it; (5, 1000) evicts one more; (5, 1001) is captured again: 3
    assert len(runner._graphs) == GRAPH_CACHE and cudart.destroyed == destroyed + 3
    with pytest.raises(InputError) as e:
        runner.run({"fbank": fbank(1, 3002)})
    assert str(e.value) == (f"TensorRT engine {engine.name}: 30.0 s of speech (3002 frames) is longer than the 30.0 s "
                            f"it was built for; split the audio, or rebuild with a larger --max-seconds: python "
                            f"export/to_trt.py --models {models} --precision fp32 --graphs encoder --max-seconds 30")
    assert trt.last_runtime.engine_host_code_allowed is False
    runner.close()
    assert cudart.memory == {}  # every device buffer freed
    with pytest.raises(ModelError, match="^encoder: this tensorrt runner is closed$"):
        runner.run({"fbank": x})


def test_tensorrt_runner_refuses_before_and_reports_after_deserialising(models, simulated):
    trt, cudart = simulated
    other = make_engine(models, gpu=SimpleNamespace(name="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0), cc="8.0"))
    with pytest.raises(EngineError, match=r"built for NVIDIA A100-SXM4-80GB \(compute capability 8\.0\), this GPU is "
                                          r"NVIDIA H200 \(compute capability 9\.0\)"):
        open_runner(models, "encoder", Backend("tensorrt", "cuda", 0), "fp32")
    other.unlink()
    vc = make_engine(models, options=Options(precision="fp32", version_compatible=True))
    vc_runner = open_runner(models, "encoder", Backend("tensorrt", "cuda", 0), "fp32")
    assert trt.last_runtime.engine_host_code_allowed is True  # the plan carries its lean runtime
    vc_runner.close()
    vc.write_bytes(b"garbage!" * 4)
    car = runtime.engines.read_sidecar(vc)
    with pytest.raises(EngineError) as e:
        TensorRTRunner(trt, vc, car)
    assert str(e.value) == (f"{vc}: TensorRT could not deserialise it (see its message above); rebuild it with: "
                            f"python export/to_trt.py --models {models} --precision fp32 --graphs encoder "
                            "--version-compatible")


def test_the_cuda_python_calls_exist_and_errors_become_engine_errors():
    """Against the real cuda-python (the [gpu] extra), whatever this machine's GPU."""
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (the gpu extra) is not installed")
    import ast

    used = set()
    for source in ("runtime/runners/cuda.py", "runtime/runners/trt_runner.py"):
        tree = ast.parse((Path(__file__).resolve().parents[1] / source).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id == "cudart" or (
                        isinstance(node.value, ast.Attribute) and node.value.attr == "cudart"):
                    used.add(node.attr)
    assert {"cudaMemcpyAsync", "cudaStreamBeginCapture", "cudaGraphLaunch", "cudaGetDeviceProperties"} <= used
    for name in sorted(used):
        owner = cudart
        if not hasattr(owner, name):  # enum members: cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            owner = next((getattr(cudart, e) for e in ("cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode")
                          if hasattr(getattr(cudart, e), name)), None)
        assert owner is not None, f"cuda.bindings.runtime has no {name}"
    assert int(cudart.cudaStream_t(123)) == 123  # what TensorRT is given
    err, *_ = cudart.cudaGetDeviceProperties(0)
    if err == cudart.cudaError_t.cudaSuccess:
        gpu = runtime.runners.cuda.current_gpu(0)
        assert gpu.name and gpu.compute_capability >= (3, 0)
    else:  # no GPU or no driver here: our error, naming CUDA's
        with pytest.raises(EngineError, match=rf"^no usable CUDA GPU 0 \(CUDA error {err.name}\)$"):
            runtime.runners.cuda.current_gpu(0)


def test_the_lean_runtime_has_what_the_runner_calls_and_no_gpu_is_a_clean_error(models, monkeypatch):
    """Against the real tensorrt_lean_bindings wheel (11.4), where installed: methods on the right
    classes; and on a machine without a usable GPU, our error before TensorRT is touched (a lean
    Runtime created there crashes the process on first use)."""
    lean = pytest.importorskip("tensorrt_lean_bindings", reason="tensorrt-lean-cu13-bindings/-libs not installed")
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (the gpu extra) is not installed")
    from runtime.dtypes import BY_TENSORRT

    for cls, names in {"Runtime": ["deserialize_cuda_engine", "engine_host_code_allowed"],
                       "ICudaEngine": ["num_io_tensors", "get_tensor_name", "get_tensor_dtype", "get_tensor_shape",
                                       "get_tensor_mode", "create_execution_context"],
                       "IExecutionContext": ["set_optimization_profile_async", "set_input_shape", "infer_shapes",
                                             "get_tensor_shape", "set_tensor_address", "execute_async_v3"]}.items():
        assert [n for n in names if not hasattr(getattr(lean, cls), n)] == [], cls
    assert all(hasattr(lean.DataType, name) for name in BY_TENSORRT)
    assert lean.TensorIOMode.INPUT != lean.TensorIOMode.OUTPUT and hasattr(lean.Logger, "WARNING")
    assert not hasattr(lean, "Builder")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", None)
    assert runtime.runners.cuda.import_tensorrt() == (lean, True)
    from cuda.bindings import runtime as cudart

    err, *_ = cudart.cudaGetDeviceProperties(0)
    if err == cudart.cudaError_t.cudaSuccess:
        pytest.skip("this machine has a usable GPU: the no-GPU path is not reachable here")
    make_engine(models, options=Options(precision="fp32", version_compatible=True))
    with pytest.raises(EngineError, match=rf"^no usable CUDA GPU 0 \(CUDA error {err.name}\)$"):
        open_runner(models, "encoder", select_backend("tensorrt", "cuda:0"), "fp32")


def test_tensorrt_runner_never_replays_right_after_a_profile_switch(models, simulated):
    trt, cudart = simulated
    make_engine(models)
    runner = open_runner(models, "encoder", Backend("tensorrt", "cuda", 0), "fp32")
    ctx = runner.context
    one, two = fbank(1, 1000, seed=4), fbank(2, 1000, seed=5)
    steps = []
    for x in (one, one, two, one, one):
        np.testing.assert_array_equal(runner.run({"fbank": x})["embedding"], x.mean(axis=2))
        steps.append((ctx.executed, cudart.launches))
    # run, replay, (switch) run + capture, (switch back) run without replay, replay
    assert steps == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2)]
    assert ctx.profiles == [1, 0] and len(runner._graphs) == 2
    runner.close()


# ------------------------------------------------------------------ fixed shapes on the real graphs
def shape_nodes(path: Path, free_dims: dict[str, int] | None) -> list[str]:
    """Nodes of ONNX Runtime's own optimisation of ``path`` (provider-independent level) that compute
    shapes: Shape/Size, or any node fed an integer tensor that is not a constant."""
    import onnx

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for name, value in (free_dims or {}).items():
        options.add_free_dimension_override_by_name(name, value)
    optimised = path.with_name(f"{path.stem}.optimised.onnx")
    options.optimized_model_filepath = str(optimised)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = onnx.shape_inference.infer_shapes(onnx.load(str(optimised)))
    optimised.unlink()
    constants = {t.name for t in model.graph.initializer}
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    ints = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
    return [f"{n.op_type} {n.name}" for n in model.graph.node
            if n.op_type in ("Shape", "Size") or any(x and x not in constants and types.get(x) in ints for x in n.input)]


@pytest.mark.parametrize("graph, dims, feed", [
    ("voice2mesh_supervised", {"batch": 1, "num_samples": 61760}, "samples"),
    ("voice2mesh_unsupervised", {"batch": 2, "num_samples": 48000}, "samples"),
    ("encoder", {"batch": 1, "frames": 1000}, "fbank")])
def test_fixed_lengths_fold_every_shape_computation_and_change_no_result(models_dir, tmp_path, graph, dims, feed):
    """What keeps a CUDA graph from being captured is shape arithmetic ONNX Runtime places on the CPU;
    with the input's dims fixed, none is left after ORT's own optimisation, and the results equal the
    dynamic graph's within 1e-6 relative (on the CPU, where this can be checked)."""
    path = tmp_path / f"{graph}.onnx"
    path.symlink_to(models_dir / f"{graph}.onnx")
    assert shape_nodes(path, None), "the check finds the shape arithmetic of the dynamic graph"
    assert shape_nodes(path, dims) == []
    from runtime.demo_signal import demo_voice

    rng = np.random.default_rng(0)
    if feed == "samples":
        x = np.stack([demo_voice(3.0 + k, seed=k)[:dims["num_samples"]] for k in range(dims["batch"])])
        x = x.astype(np.float32)
    else:
        x = rng.standard_normal((dims["batch"], 64, dims["frames"])).astype(np.float32)
    dynamic = OrtRunner.open(path, graph, ["CPUExecutionProvider"]).run({feed: x})
    fixed = BoundOrtRunner.open(path, graph, ["CPUExecutionProvider"], "cpu", cuda_graph=True).run({feed: x})
    for name, want in dynamic.items():
        got = fixed[name]
        if want.dtype == np.uint8:
            assert np.array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()), err_msg=name)
