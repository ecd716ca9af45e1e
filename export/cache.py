"""Build the cache's models folders (torch). Finding a finished one is ``runtime.cache``'s work.

:func:`build_entry` is registered as the cache's builder (``setup.py``, entry point group
``cmp_deploy.cache_builders``), so the runtime builds on a cache miss without importing export.
Each entry is built under ``<entry>.partial-<pid>`` and renamed when complete, so an interrupted
build is never mistaken for a finished one (``runtime.cache`` removes such leftovers once their
process is gone). Messages name the final folder, never the partial one.
"""
from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from export.onnx_export import default_real_audio, default_real_inputs, export_release, export_steps
from export.progress import StepBar
from export.synthetic import PACK_STEPS, write_pack
from runtime.cache import models_for, partial_path
from runtime.models_folder import PIPELINES, check_models


@contextlib.contextmanager
def _exit_on_sigterm():
    """SIGTERM ends the build through ``finally`` (removing its partial folder) instead of at once.
    SIGKILL cannot be caught: that leftover is removed by the next lookup (runtime.cache)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _build(final: Path, steps: int, build: Callable[[Path, Callable[[str], None]], None],
           progress: Callable[[str], None]) -> None:
    tmp = partial_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with _exit_on_sigterm():
        try:
            with StepBar(steps, progress, rewrite=lambda m: m.replace(str(tmp), str(final))) as bar:
                build(tmp, bar)
            try:
                tmp.rename(final)
            except OSError:
                if not final.is_dir() or check_models(final / "models"):
                    raise
                # another process finished the same entry first: keep theirs
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    progress(f"models cached in {final / 'models'}")


def build_synthetic(final: Path, seed: int = 0, progress: Callable[[str], None] = print) -> None:
    """Write the synthetic pack and export both pipelines into ``final`` (about a minute on two cores)."""
    def build(tmp: Path, say: Callable[[str], None]) -> None:
        say(f"building the synthetic (UNTRAINED) models once into {final}")
        pack = write_pack(tmp / "release", seed, say)
        export_release(pack, tmp / "models", PIPELINES, None, default_real_inputs(), seed=seed, progress=say,
                       real_audio=default_real_audio())

    _build(final, PACK_STEPS + export_steps(PIPELINES), build, progress)


def build_release(final: Path, release: str | Path, pipeline: str, epoch: str | int | None = None,
                  progress: Callable[[str], None] = print) -> None:
    """Export one pipeline of a release folder into ``final``."""
    def build(tmp: Path, say: Callable[[str], None]) -> None:
        say(f"exporting {release} ({pipeline}) once into {final}")
        export_release(release, tmp / "models", (pipeline,), epoch, default_real_inputs(), progress=say,
                       real_audio=default_real_audio())

    _build(final, export_steps((pipeline,)), build, progress)


def build_entry(entry: Path, release: Path | None, pipeline: str, epoch: str | int | None, seed: int,
                progress: Callable[[str], None]) -> None:
    """Build the cache entry ``entry``: the synthetic pack (``release`` None) or one pipeline of a
    release folder (the registered ``runtime.plugins.CacheBuilder``)."""
    if release is None:
        build_synthetic(entry, seed, progress)
    else:
        build_release(entry, release, pipeline, epoch, progress)


def synthetic_models(seed: int = 0, progress: Callable[[str], None] = print) -> Path:
    """The synthetic pack's models folder in the cache, built once."""
    return models_for(None, PIPELINES[0], progress=progress, seed=seed, build=build_entry)


def release_models(release: str | Path, pipeline: str, epoch: str | int | None = None,
                   progress: Callable[[str], None] = print) -> Path:
    """The models folder exported from a release folder, rebuilt when its files change."""
    return models_for(Path(release), pipeline, epoch, progress, build=build_entry)

