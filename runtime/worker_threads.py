"""Threads of a worker process, where several run side by side (``predict --workers``, the server).

N processes on N cores each want one core's worth of threads. ONNX Runtime takes its count when a
session opens and Sim3DR reads ``SIM3DR_NUM_THREADS`` when called, but numpy's BLAS (OpenBLAS or
MKL) was loaded before the fork and keeps the thread count it started with: its spinning threads
in two processes on two cores made ``predict --workers 2`` slower than one process (log-mel 3 ms
became 20-80 ms). threadpoolctl sets it in the running process.
"""
from __future__ import annotations

import os

_LIMITS: list = []  # kept alive: the limits hold while their object does not restore them


def limit_worker_threads(threads: int) -> None:
    """Give this worker process ``threads`` threads for BLAS and Sim3DR (a ``SIM3DR_NUM_THREADS``
    the user set wins)."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("SIM3DR_NUM_THREADS", str(threads))
    _LIMITS.append(threadpool_limits(limits=threads))
