"""Serving: the Open Inference Protocol (KServe v2) over HTTP, dynamic batching, metrics
(``cmp-face serve``), and Triton model repositories (``cmp-face triton-repo``).

Needs the ``serve`` extra (starlette, uvicorn, prometheus_client) for the server; the
repository writer needs only onnxruntime (and tritonclient's protobuf to validate).
"""
from __future__ import annotations

__all__ = ["serve"]


def serve(*args, **kwargs) -> int:
    """See :func:`runtime.serve.server.serve`."""
    from runtime.serve.server import serve as _serve

    return _serve(*args, **kwargs)
