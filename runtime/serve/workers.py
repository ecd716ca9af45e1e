"""The server's CPU stage in worker processes: decompressing, parsing, audio decoding, VAD, log-mel.

webrtcvad and the audio decoders hold the GIL, so threads would run them one at a time; processes
use every core. Each call carries its :class:`runtime.serve.pipeline.RequestInputs` (small, and
no model), so the pool is started before the models are opened (a forked process must not inherit
ONNX Runtime's threads). It is started again if a worker dies (killed for memory, say): that
request is answered 503, the next ones run.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from runtime.errors import InputWarning
from runtime.serve.pipeline import RequestInputs
from runtime.serve.protocol import ProtocolError
from runtime.worker_threads import limit_worker_threads

log = logging.getLogger("cmp_face.serve")


def _init() -> None:
    limit_worker_threads(1)  # one process per core already
    warnings.simplefilter("ignore", InputWarning)  # collected in the answer's warnings instead


def _call(inputs: RequestInputs, method: str, *args) -> Any:
    return getattr(inputs, method)(*args)


def _ready() -> int:
    return os.getpid()


class CpuWorkers:
    """``await run(inputs, method, *args)``: ``inputs.<method>(*args)`` in a worker process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def start(self, method: str = "fork") -> None:
        """Start the processes now (forked before this process opens its models; started afresh
        with ``spawn`` once models are open)."""
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context(method if method in methods else "spawn")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init)
        self._pool.submit(_ready).result()  # with fork, every worker starts on the first task

    async def run(self, inputs: RequestInputs, method: str, *args) -> Any:
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _call, inputs, method, *args)
        except BrokenProcessPool:
            log.error("a CPU worker process died (out of memory?): starting the workers again")
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self.start("spawn")
            raise ProtocolError(503, "a worker process of this server died while handling the request; retry",
                                {"Retry-After": "1"}) from None

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
