"""One small interface over every backend (Polygraphy's split: what loads a model vs what runs it).

A runner runs one graph of a models folder (``encoder``, ``decoder_<pipeline>``,
``voice2mesh_<pipeline>``, ``frontend``)::

    backend = select_backend("auto", "cuda", models)        # which backend, checked up front
    with open_runner(models, "encoder", backend, "fp16") as runner:
        runner.inputs                                        # (TensorInfo(name, dtype, shape), ...)
        out = runner.run({"fbank": fbank})                   # {"embedding": array}

Modules: ``base`` (Runner, TensorInfo), ``select`` (backend and device parsing, ``select_backend``,
``open_runner``), ``loaders`` (ONNX Runtime sessions), ``ort_runner`` (ONNX Runtime on the CPU,
CUDA with IOBinding and optional CUDA graphs, its TensorRT provider), ``trt_runner`` (native
TensorRT engines), ``cuda`` (the one place TensorRT and cuda-python are imported). The caller never
needs to know which runner it holds. Nothing in this package imports this file.
"""
from runtime.runners.base import Runner, TensorInfo
from runtime.runners.select import BACKENDS, Backend, open_runner, parse_device, select_backend

__all__ = ["BACKENDS", "Backend", "Runner", "TensorInfo", "open_runner", "parse_device", "select_backend"]
