"""Dynamic batching: requests that arrive within ``max_delay`` of each other run together.

One asyncio task collects queued requests into a batch of at most ``max_batch`` items (a
request of B utterances counts B; one larger than ``max_batch`` runs alone), waiting at most
``max_delay`` after the first one, then hands the batch to ``run`` on a single model thread,
so the ONNX Runtime sessions see one batch at a time while the next one gathers. Requests
whose deadline passed while they waited are answered without running.

How equal lengths are handled: the batcher does not group by length itself. ``run`` is the
Predictor's own batching (``embed`` groups equal numbers of frames into one encoder call,
``decode`` takes every embedding in one call; the fused graph groups equal sample counts).
With the numpy frontend every utterance under 10 s is tiled to exactly 1000 frames, so those
always share one encoder call whatever their lengths; only longer ones split into groups.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


class DeadlineExceeded(Exception):
    """The request's deadline passed before its batch ran."""


@dataclass
class Batched:
    results: list[Any]
    wait_s: float   # queued before its batch started
    run_s: float    # the batch's model time


@dataclass
class _Item:
    payload: list[Any]              # one entry per utterance
    deadline: float                 # loop.time()
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """``await submit(items, deadline)`` -> :class:`Batched`: ``run``'s results for those
    items, in order, and the time they waited and ran."""

    def __init__(self, run: Callable[[list[Any]], list[Any]], max_batch: int, max_delay_s: float,
                 on_batch: Callable[[int, list[float]], None] | None = None) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._on_batch = on_batch or (lambda size, waits: None)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cmp-model")
        self._task: asyncio.Task | None = None
        self._carry: _Item | None = None

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not counting the one running)."""
        return self._queue.qsize() + (self._carry is not None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="cmp-batcher")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued (at most ``timeout_s``), then stop (called once the server
        accepts nothing new)."""
        until = time.monotonic() + timeout_s
        while self.depth and time.monotonic() < until:
            await asyncio.sleep(0.005)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, payload: list[Any], deadline: float) -> Batched:
        item = _Item(payload, deadline, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        return await item.future

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _gather(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        batch, size = [first], len(first.payload)
        until = loop.time() + self.max_delay_s
        while size < self.max_batch:
            item = await self._next(until - loop.time())
            if item is None:
                break
            if size + len(item.payload) > self.max_batch:
                self._carry = item  # first of the next batch
                break
            batch.append(item)
            size += len(item.payload)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            now = loop.time()
            live = []
            for item in batch:
                if item.future.done():       # the client went away
                    continue
                if now > item.deadline:
                    item.future.set_exception(DeadlineExceeded())
                    continue
                live.append(item)
            if not live:
                continue
            flat = [p for item in live for p in item.payload]
            started = time.perf_counter()
            self._on_batch(len(flat), [started - item.enqueued for item in live])
            try:
                results = await loop.run_in_executor(self._pool, self._run, flat)
                run_s = time.perf_counter() - started
            except Exception as exc:  # noqa: BLE001 - handed to each request, never kills the loop
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            k = 0
            for item in live:
                n = len(item.payload)
                if not item.future.done():
                    item.future.set_result(Batched(results[k:k + n], started - item.enqueued, run_s))
                k += n
