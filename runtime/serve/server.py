"""``serve()``: open the models, bind the socket, run uvicorn until SIGTERM/SIGINT, exit 0."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from pathlib import Path

from runtime.errors import CmpError, InputError
from runtime.serve.pipeline import MAX_REQUEST_BATCH, Limits

log = logging.getLogger("cmp_face.serve")
MAX_DELAY_MS = 10_000.0


def _imports():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise CmpError(f"serving needs the serve extra ({exc.name} is missing): "
                       "pip install 'cmp-deploy[serve]'") from exc
    return uvicorn


def check_options(port: int, max_batch: int | None, max_delay_ms: float, limits: Limits, workers: int,
                  threads: int | None = None) -> None:
    """Everything checkable before the models are opened."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, got {port}")
    if max_batch is not None and not 1 <= max_batch <= MAX_REQUEST_BATCH:
        raise InputError(f"--max-batch must be between 1 and {MAX_REQUEST_BATCH}, got {max_batch}")
    if not 0 <= max_delay_ms <= MAX_DELAY_MS:
        raise InputError(f"--max-delay-ms must be between 0 and {MAX_DELAY_MS:g}, got {max_delay_ms:g}")
    if (limits.max_body_bytes < 1024 or limits.max_queue < 1 or limits.max_audio_s <= 0 or limits.timeout_s <= 0
            or limits.header_timeout_s <= 0 or limits.body_timeout_s <= 0 or limits.max_json_bytes < 1024
            or (limits.max_receiving_bytes is not None and limits.max_receiving_bytes < limits.max_body_bytes)):
        raise InputError(f"limits must be positive (body and JSON >= 1024 bytes, the receiving budget at least "
                         f"one body): {limits}")
    if not 1 <= workers <= 256:
        raise InputError(f"--workers must be between 1 and 256, got {workers}")
    if threads is not None and not 1 <= threads <= 256:
        raise InputError(f"--threads must be between 1 and 256, got {threads}")


def default_max_batch(device: str) -> int:
    """On a GPU a batch costs little more than one utterance; on a CPU, ONNX Runtime already keeps
    the cores busy within one, and waiting for a batch only adds latency (README, serving)."""
    return 8 if device == "cuda" else 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CmpError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(models: str | os.PathLike, pipeline: str = "supervised", backend: str = "auto",
          host: str = "127.0.0.1", port: int = 8000, max_batch: int | None = None, max_delay_ms: float = 2.0, *,
          precision: str = "fp32", device: str = "auto", threads: int | None = None,
          frontend: str = "numpy", limits: Limits | None = None, workers: int | None = None,
          drain_timeout_s: float = 30.0, log_level: str = "info") -> int:
    """Serve one pipeline over HTTP until SIGTERM or SIGINT; returns 0 after a graceful drain.

    Binds ``host`` (loopback by default: no authentication, put a proxy in front for anything
    else). ``workers`` processes run the CPU stage (default: one per core); ``max_batch`` defaults
    to 8 on a GPU and 1 on the CPU. On a signal the listener closes, requests in flight finish
    (at most ``drain_timeout_s``), queued batches run, and the process exits 0.
    """
    from runtime.predict_files import default_workers

    uvicorn = _imports()
    limits = limits or Limits()
    workers = default_workers() if workers is None else workers
    check_options(port, max_batch, max_delay_ms, limits, workers, threads)
    from runtime.predictor import Predictor
    from runtime.serve.app import create_app
    from runtime.serve.connection import protocol_with_header_deadline
    from runtime.serve.pipeline import ServedPipeline
    from runtime.serve.workers import CpuWorkers

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sock = _bind(host, port)
    cpu = None
    try:
        cpu = CpuWorkers(workers)
        cpu.start()  # forked first: the workers must not inherit the model runtime's threads
        predictor = Predictor(Path(models), pipeline, device=device, threads=threads, frontend=frontend,
                              backend=backend, precision=precision)
        served = ServedPipeline(predictor, limits)
    except BaseException:
        sock.close()
        if cpu is not None:
            cpu.stop()
        raise
    max_batch = max_batch or default_max_batch(predictor.models.backend.device)
    app = create_app(served, cpu, max_batch, max_delay_ms)
    bound = sock.getsockname()[1]
    if predictor.untrained:
        log.warning("these models come from the synthetic asset pack: UNTRAINED weights")
    log.info("serving %s on http://%s:%d (max batch %d, max delay %g ms, %d CPU workers, %s)",
             ", ".join(served.model_names), host, bound, max_batch, max_delay_ms, workers, predictor.models.describe())
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            http=protocol_with_header_deadline(limits.header_timeout_s),
                            timeout_graceful_shutdown=max(1, round(drain_timeout_s)))
    server = _server(config)
    server.run(sockets=[sock])
    log.info("stopped")
    return 0


def _server(config):
    """uvicorn's Server, except that a signal ends it with exit status 0: uvicorn re-raises the
    signal after its graceful shutdown (the process would then die of SIGTERM)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server(config)
