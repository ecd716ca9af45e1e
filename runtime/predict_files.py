"""Predict many inputs into mirrored output folders (``cmp-face predict DIR -o OUT``).

Each input is one job (:func:`runtime.inputs.plan_inputs`): read, predict, write its folder
all-or-nothing. A failing input does not stop the others; outcomes come back in input order.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import CmpError
from runtime.inputs import Job
from runtime.outputs import write_outputs
from runtime.predictor import Predictor


@dataclass(frozen=True)
class OutputOptions:
    """What to write for each input (``cmp-face predict``'s ``--size``, ``--ply``, ``--depth``)."""

    size: int | None = None
    ply: bool = False
    depth: bool = False
    sample_rate: int | None = None


@dataclass(frozen=True)
class Outcome:
    source: Path
    output: Path
    error: str | None = None    # one line; None: written
    rerun: bool = False         # replaced or removed our files of an earlier run
    detail: str | None = None   # the traceback, when asked for


def predict_job(predictor: Predictor, job: Job, options: OutputOptions, debug: bool = False) -> Outcome:
    """One input: predict and write its folder; our errors (and OS errors) become its outcome."""
    try:
        result = predictor.predict(job.source, sample_rate=options.sample_rate)
        written = write_outputs(result, job.output, options.size, options.ply, options.depth)
    except (CmpError, OSError) as exc:
        return Outcome(job.source, job.output, str(exc).replace("\n", " "),
                       detail=traceback.format_exc() if debug else None)
    return Outcome(job.source, job.output, rerun=bool(written.replaced or written.removed))


def predict_jobs(predictor: Predictor, jobs: list[Job], options: OutputOptions, debug: bool = False) -> list[Outcome]:
    """Every job in order, with a progress bar on a terminal."""
    from tqdm import tqdm

    return [predict_job(predictor, job, options, debug)
            for job in tqdm(jobs, desc="predict", unit="input", file=sys.stderr, disable=None)]
