"""Predict many inputs into mirrored output folders (``cmp-face predict DIR -o OUT``).

Each input is one job (:func:`runtime.inputs.plan_inputs`): read, predict, write its folder
all-or-nothing. A failing input does not stop the others; outcomes come back in input order.

With ``workers`` > 1 the inputs run in parallel processes (webrtcvad, the file writers and most of
the rendering hold the GIL, so threads would not help): on the CPU each worker opens its own
Predictor and runs whole inputs, with ``cores // workers`` threads for ONNX Runtime and Sim3DR; with
a GPU the parent process owns the device and runs the models in batches, and the workers feed it
(read, VAD, log-mel) and write the files. Files are the same whatever the number of workers.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from runtime.errors import CmpError
from runtime.inputs import Job
from runtime.outputs import write_outputs
from runtime.predictor import MAX_DECODER_BATCH, Predictor
from runtime.prepare import InputPreparer
from runtime.result import Prediction
from runtime.worker_threads import limit_worker_threads

MAX_WORKERS = 256


@dataclass(frozen=True)
class OutputOptions:
    """What to write for each input (``cmp-face predict``'s ``--size``, ``--ply``, ``--depth``)."""

    size: int | None = None
    ply: bool = False
    depth: bool = False
    sample_rate: int | None = None


@dataclass(frozen=True)
class PredictorSpec:
    """How to open the Predictor, in this process or in a worker (picklable)."""

    models: Path
    pipeline: str = "supervised"
    device: str = "auto"
    threads: int | None = None
    vad: bool = True
    frontend: str = "numpy"
    max_bytes: int | None = None
    backend: str = "auto"
    precision: str = "fp32"
    limit_names: tuple[tuple[str, str], ...] = ()  # how messages name the limits: (("max_bytes", "--max-bytes"),)

    def open(self) -> Predictor:
        predictor = Predictor(self.models, self.pipeline, self.device, self.threads, vad=self.vad,
                              frontend=self.frontend, max_bytes=self.max_bytes, backend=self.backend,
                              precision=self.precision)
        predictor.limit_names.update(self.limit_names)
        return predictor

    def preparer(self) -> InputPreparer:
        return InputPreparer(self.frontend, self.vad, self.max_bytes, dict(self.limit_names))


@dataclass(frozen=True)
class Outcome:
    source: Path
    output: Path
    error: str | None = None    # one line; None: written
    rerun: bool = False         # replaced or removed our files of an earlier run
    detail: str | None = None   # the traceback, when asked for


def _failed(job: Job, exc: BaseException, debug: bool) -> Outcome:
    return Outcome(job.source, job.output, str(exc).replace("\n", " "),
                   detail=traceback.format_exc() if debug else None)


def _write(result: Prediction, job: Job, options: OutputOptions, debug: bool) -> Outcome:
    try:
        written = write_outputs(result, job.output, options.size, options.ply, options.depth)
    except (CmpError, OSError) as exc:
        return _failed(job, exc, debug)
    return Outcome(job.source, job.output, rerun=bool(written.replaced or written.removed))


def predict_job(predictor: Predictor, job: Job, options: OutputOptions, debug: bool = False) -> Outcome:
    """One input: predict and write its folder; our errors (and OS errors) become its outcome."""
    try:
        result = predictor.predict(job.source, sample_rate=options.sample_rate)
    except (CmpError, OSError) as exc:
        return _failed(job, exc, debug)
    return _write(result, job, options, debug)


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="predict", unit="input", file=sys.stderr, disable=None)


def default_workers() -> int:
    """One per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def predict_jobs(spec: PredictorSpec, jobs: list[Job], options: OutputOptions, workers: int = 1,
                 debug: bool = False, feed: bool | None = None) -> list[Outcome]:
    """Every job, in input order. ``workers`` 1 runs them here, one after the other; more run them
    in that many processes (see the module's docstring): ``feed`` (default: when the models run on
    a GPU) keeps the models in this process and has the workers prepare and write."""
    if workers <= 1 or len(jobs) <= 1:
        predictor = spec.open()
        with _progress(len(jobs)) as bar:
            outcomes = []
            for job in jobs:
                outcomes.append(predict_job(predictor, job, options, debug))
                bar.update(1)
            return outcomes
    workers = min(workers, len(jobs))
    if feed is None:
        from runtime.runners import select_backend

        feed = select_backend(spec.backend, spec.device, spec.models).device == "cuda"
    if feed:
        return _feed_the_device(spec, jobs, options, workers, debug)
    return _whole_inputs(spec, jobs, options, workers, debug)


# ------------------------------------------------------------------ CPU: each worker runs whole inputs
_WORKER: dict = {}


def _pool(workers: int, initializer, *args) -> ProcessPoolExecutor:
    # fork: the workers start from this process's imports (no model is open here yet: a forked
    # ONNX Runtime session would not be safe), spawn where fork does not exist.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=args)


def _threads_each(workers: int) -> int:
    return max(1, default_workers() // workers)


def _init_whole(spec: PredictorSpec, threads: int) -> None:
    limit_worker_threads(threads)
    _WORKER["predictor"] = replace(spec, threads=spec.threads or threads).open()


def _run_whole(index: int, job: Job, options: OutputOptions, debug: bool) -> tuple[int, Outcome]:
    return index, predict_job(_WORKER["predictor"], job, options, debug)


def _whole_inputs(spec: PredictorSpec, jobs: list[Job], options: OutputOptions, workers: int,
                  debug: bool) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(jobs)
    with _pool(workers, _init_whole, spec, _threads_each(workers)) as pool, _progress(len(jobs)) as bar:
        futures = [pool.submit(_run_whole, i, job, options, debug) for i, job in enumerate(jobs)]
        for future in as_completed(futures):
            index, outcomes[index] = future.result()
            bar.update(1)
    return outcomes  # type: ignore[return-value]


# ------------------------------------------------------------------ GPU: this process owns the device
def _init_feeder(spec: PredictorSpec, threads: int) -> None:
    limit_worker_threads(threads)
    _WORKER["preparer"] = spec.preparer()


def _prepare(index: int, job: Job, options: OutputOptions, debug: bool):
    try:
        notes: list[str] = []
        return index, _WORKER["preparer"].prepare(job.source, options.sample_rate, notes=notes), notes, None
    except (CmpError, OSError) as exc:
        return index, None, [], _failed(job, exc, debug)


def _write_job(index: int, result: Prediction, job: Job, options: OutputOptions, debug: bool) -> tuple[int, Outcome]:
    return index, _write(result, job, options, debug)


def _chunks(items: list, size: int) -> Iterator[list]:
    for k in range(0, len(items), size):
        yield items[k:k + size]


def _feed_the_device(spec: PredictorSpec, jobs: list[Job], options: OutputOptions, workers: int,
                     debug: bool) -> list[Outcome]:
    """Workers read and prepare, this process runs the models in batches, workers write."""
    outcomes: list[Outcome | None] = [None] * len(jobs)
    with _pool(workers, _init_feeder, spec, _threads_each(workers)) as pool, _progress(len(jobs)) as bar:
        pool.submit(os.getpid).result()  # the workers exist before this process opens the device
        predictor = spec.open()
        for chunk in _chunks(list(enumerate(jobs)), MAX_DECODER_BATCH):
            prepared = [pool.submit(_prepare, i, job, options, debug) for i, job in chunk]
            ready = []
            for future in prepared:
                index, item, notes, failure = future.result()
                if failure is not None:
                    outcomes[index] = failure
                    bar.update(1)
                else:
                    ready.append((index, item, notes))
            results = predictor.infer([item for _, item, _ in ready])
            writes = []
            for (index, _, notes), out in zip(ready, results):
                try:
                    result = predictor.to_prediction(out.checked(index))
                except CmpError as exc:
                    outcomes[index] = _failed(jobs[index], exc, debug)
                    bar.update(1)
                    continue
                result.warnings = notes
                writes.append(pool.submit(_write_job, index, result, jobs[index], options, debug))
            for future in as_completed(writes):
                index, outcomes[index] = future.result()
                bar.update(1)
    return outcomes  # type: ignore[return-value]
