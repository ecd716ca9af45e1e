"""Which files of a release-layout folder one pipeline needs, and their hashes. No torch.

Kept apart from ``export.checkpoints`` (which loads them with torch) so that looking up the
models exported from a release (``runtime.cache``) never imports torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from runtime.errors import CheckpointError
from runtime.models_folder import PIPELINES, sha256


@dataclass
class ReleaseFolder:
    """The files of one pipeline in a release-layout folder, with the epoch resolved."""

    root: Path
    pipeline: str
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def locate(cls, root: str | Path, pipeline: str, epoch: str | int | None = None) -> "ReleaseFolder":
        root = Path(root)
        if pipeline not in PIPELINES:
            raise CheckpointError(f"unknown pipeline {pipeline!r}: choose one of {', '.join(PIPELINES)}")
        if not root.is_dir():
            raise CheckpointError(f"{root}: release folder not found")
        models = root / "pretrained_models"
        files = {"voice_embedding": models / "voice_embedding.pth",
                 "morphable": models / "2D-to-3D-pretrained.tar",
                 "triangles": root / "train.configs" / "tri.mat"}
        if pipeline == "supervised":
            files["heads"] = _epoch_file(models / "supervised_64", "generator", epoch)
        else:
            files["generator"] = _epoch_file(models, "generator", epoch)
            files["image3d"] = _epoch_file(models, "image3D", epoch)
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise CheckpointError(f"release folder {root} is incomplete for the {pipeline} pipeline; "
                                  f"missing: {', '.join(missing)}")
        return cls(root, pipeline, files)

    def hashes(self, hasher: Callable[[list[Path]], dict[Path, str]] | None = None) -> dict[str, str]:
        """sha256 per file, keyed by its path in the folder; ``hasher`` may answer from a memo."""
        paths = list(self.files.values())
        found = hasher(paths) if hasher else {p: sha256(p) for p in paths}
        return {str(p.relative_to(self.root)): found[p] for p in paths}


def _epoch_file(folder: Path, stem: str, epoch: str | int | None) -> Path:
    """``<stem>_<epoch>.pth``: the given epoch, else the only candidate, else an error."""
    if epoch is not None:
        return folder / f"{stem}_{epoch}.pth"
    pattern = re.compile(rf"^{re.escape(stem)}_(.+)\.pth$")
    found = sorted(p for p in folder.glob(f"{stem}_*.pth") if pattern.match(p.name)) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        return folder / f"{stem}_<epoch>.pth"  # reported as missing by the caller
    names = ", ".join(p.name for p in found)
    raise CheckpointError(f"{folder}: several {stem} checkpoints ({names}); choose one with epoch=... "
                          "(CLI: --epoch)")
