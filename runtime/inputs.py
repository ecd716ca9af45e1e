"""Which inputs ``cmp-face predict`` runs and where each one's outputs go.

One input file writes into OUT itself. A folder, or several inputs, give one output folder per
input that mirrors the input tree: ``DIR/<identity>/<utt>.wav -> OUT/<identity>/<utt>/`` (the
layout ``cmp-face evaluate`` reads).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InputError

# Audio is recognised by its content; in folders these names are the ones we pick up.
INPUT_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                            ".caf", ".w64", ".rf64", ".au", ".snd", ".npy"})


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    batch: bool  # part of a folder or multi-input run


def _folder_files(folder: Path, skip: Path) -> list[Path]:
    """Input files below ``folder`` in a stable order; hidden entries and ``skip`` (OUT) left out."""
    found = []
    for top, dirs, files in os.walk(folder):  # does not follow symbolic links to folders
        here = Path(top)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip)
        found += [here / f for f in sorted(files) if not f.startswith(".") and Path(f).suffix.lower() in INPUT_SUFFIXES]
    return found


def plan_inputs(inputs: list[Path], out: Path) -> list[Job]:
    """Jobs for the given inputs, checked before any work: missing inputs, empty folders and two
    inputs that would write the same output folder are refused."""
    for path in inputs:
        if not path.exists():
            raise InputError(f"{path}: file not found")
    if len(inputs) == 1 and not inputs[0].is_dir():
        return [Job(inputs[0], out, batch=False)]
    skip = out.resolve()
    jobs: list[Job] = []
    for path in inputs:
        if path.is_dir():
            files = _folder_files(path, skip)
            if not files:
                raise InputError(f"{path}: no audio or .npy files in this folder "
                                 f"(looked for {', '.join(sorted(INPUT_SUFFIXES))})")
            base = out if len(inputs) == 1 else out / path.resolve().name
            jobs += [Job(f, base / f.relative_to(path).with_suffix(""), batch=True) for f in files]
        else:
            jobs.append(Job(path, out / path.stem, batch=True))
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.output in seen:
            raise InputError(f"{seen[job.output]} and {job.source} would both write {job.output}: "
                             "rename one, or run them separately")
        seen[job.output] = job.source
    return jobs
