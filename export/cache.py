"""Build models folders on demand into a user cache (used by ``cmp-face`` without ``--models``).

Layout: ``<cache>/synthetic-v<pack>-seed<seed>/{release,models}`` for the synthetic pack and
``<cache>/release-<key>/models`` for a release folder, ``<key>`` hashing its files and epoch.
A folder is built under a temporary name and renamed when complete, so an interrupted build
is never mistaken for a finished one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

from export.checkpoints import PIPELINES, ReleaseFolder
from export.onnx_export import MODELS_MANIFEST, default_real_audio, default_real_inputs, export_release
from export.synthetic import PACK_VERSION, write_pack


def cache_root() -> Path:
    """``$CMP_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/cmp-deploy``, else ``~/.cache/cmp-deploy``."""
    if os.environ.get("CMP_DEPLOY_CACHE"):
        return Path(os.environ["CMP_DEPLOY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cmp-deploy"


def _build(final: Path, build: Callable[[Path], None], progress: Callable[[str], None]) -> Path:
    if (final / "models" / MODELS_MANIFEST).is_file():
        return final / "models"
    tmp = final.with_name(final.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"models cached in {final / 'models'}")
    return final / "models"


def synthetic_models(seed: int = 0, progress: Callable[[str], None] = print) -> Path:
    """The synthetic pack's models folder, built once (about a minute on two cores)."""
    final = cache_root() / f"synthetic-v{PACK_VERSION}-seed{seed}"

    def build(tmp: Path) -> None:
        progress(f"building the synthetic (UNTRAINED) models once into {final}")
        pack = write_pack(tmp / "release", seed, progress)
        export_release(pack, tmp / "models", PIPELINES, None, default_real_inputs(), seed=seed, progress=progress,
                       real_audio=default_real_audio())

    return _build(final, build, progress)


def release_models(release: str | Path, pipeline: str, epoch: str | int | None = None,
                   progress: Callable[[str], None] = print) -> Path:
    """The models folder exported from a release folder, rebuilt when its files change."""
    folder = ReleaseFolder.locate(release, pipeline, epoch)
    key = hashlib.sha256(repr(sorted(folder.hashes().items())).encode()).hexdigest()[:16]
    final = cache_root() / f"release-{pipeline}-{key}"

    def build(tmp: Path) -> None:
        progress(f"exporting {release} ({pipeline}) once into {final}")
        export_release(release, tmp / "models", (pipeline,), epoch, default_real_inputs(), progress=progress,
                       real_audio=default_real_audio())

    return _build(final, build, progress)
