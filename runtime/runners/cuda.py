"""The one module that imports TensorRT and cuda-python (each on demand, with our errors).

``import_tensorrt`` finds the full package, else the lean runtime (engines only); ``cuda_runtime``
is cuda-python's runtime API (``cuda.bindings.runtime``: buffers, streams, CUDA graphs), never
pycuda. Written against NVIDIA's documented APIs (DEPLOY-NOTES A.2); not executed on a GPU here.
"""
from __future__ import annotations

from types import ModuleType

from runtime.engines import BUILD_SCRIPT, INSTALL_CUDA_PYTHON, INSTALL_LEAN, INSTALL_TENSORRT, Gpu
from runtime.errors import EngineError


def import_tensorrt(builder: bool = False) -> tuple[ModuleType, bool]:
    """``(module, lean)``: ``tensorrt``, else (to run engines only) ``tensorrt_lean`` or
    ``tensorrt_lean_bindings``. The lean runtime has no builder and loads only engines built
    with ``--version-compatible``."""
    try:
        import tensorrt as trt
        return trt, False
    except ImportError:
        if builder:
            raise EngineError(f"TensorRT is not installed: building engines needs it: {INSTALL_TENSORRT}; "
                              f"{BUILD_SCRIPT} --dry-run writes trtexec command lines instead") from None
    try:
        import tensorrt_lean as lean
        return lean, True
    except ImportError:
        pass
    try:
        import tensorrt_lean_bindings as lean
        return lean, True
    except ImportError:
        pass
    raise EngineError(f"TensorRT is not installed: running engines needs it: {INSTALL_TENSORRT}; for engines "
                      f"built with --version-compatible the lean runtime is enough: {INSTALL_LEAN}")


def tensorrt_available() -> bool:
    """Whether TensorRT (full or lean) and cuda-python both import."""
    try:
        import_tensorrt()
        cuda_runtime()
    except EngineError:
        return False
    return True


def cuda_runtime() -> ModuleType:
    """cuda-python's runtime API module (``cuda.bindings.runtime``)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise EngineError(f"cuda-python is not installed: TensorRT engines need it ({INSTALL_CUDA_PYTHON})") from None
    return cudart


def cuda_check(result):
    """Unpack a cuda-python ``(err, *values)`` tuple, raising EngineError on an error."""
    cudart = cuda_runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if isinstance(err, cudart.cudaError_t) and err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise EngineError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (tuple(values) or None)


def current_gpu(device: int = 0) -> Gpu:
    """Name and compute capability of CUDA device ``device``."""
    cudart = cuda_runtime()
    try:
        prop = cuda_check(cudart.cudaGetDeviceProperties(device))
    except EngineError as exc:
        raise EngineError(f"no usable CUDA GPU {device} ({exc})") from None
    name = prop.name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return Gpu(name.strip(), (int(prop.major), int(prop.minor)))
