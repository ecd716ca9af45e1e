"""The files ``cmp-face predict`` writes for one prediction, all-or-nothing, in an output folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.atomic import OutputFolder
from runtime.result import Prediction

# Our own output names in an OUT folder: a rerun replaces these and never touches other files.
OUTPUT_FILES = ("mesh.obj", "mesh_frontal.obj", "result.npz", "render.png", "face.png", "mesh.ply",
                "depth.png", "depth.npy")


@dataclass(frozen=True)
class Written:
    """What :func:`write_outputs` did in ``folder``."""

    folder: Path
    paths: list[Path]
    replaced: list[str]   # our files of an earlier run, replaced
    removed: list[str]    # our files of an earlier run not written this time, removed

    def note(self) -> str | None:
        """One line about an earlier run's files, or None."""
        if not self.replaced and not self.removed:
            return None
        note = f"note: {self.folder}: replaced the outputs of an earlier run ({', '.join(self.replaced)})"
        return note + (f"; removed {', '.join(self.removed)} (not written this time)" if self.removed else "")


def write_outputs(result: Prediction, out: Path, size: int | None = None, ply: bool = False,
                  depth: bool = False) -> Written:
    """Write one prediction's files into ``out``: all of them appear, or none changes.

    ``mesh.obj``, ``result.npz``, ``render.png`` (at ``size``); the unsupervised pipeline adds
    ``mesh_frontal.obj`` (the unaligned mesh the release's analysis and evaluation measure) and
    ``face.png``; ``ply`` adds ``mesh.ply``, ``depth`` adds ``depth.png`` and ``depth.npy``.
    """
    from runtime.mesh_io import write_obj, write_png

    with OutputFolder(out, OUTPUT_FILES) as folder:
        result.write_obj(folder.path("mesh.obj"))
        result.save_npz(folder.path("result.npz"))
        write_png(folder.path("render.png"), result.render(size=size))
        if result.vertices_frontal is not None:
            write_obj(folder.path("mesh_frontal.obj"), result.vertices_frontal, result.triangles)
        if result.face_image is not None:
            write_png(folder.path("face.png"), result.face_image)
        if ply:
            result.write_ply(folder.path("mesh.ply"))
        if depth:
            result.write_depth(folder.path("depth.png"), size)
        return Written(Path(out), *folder.commit())
