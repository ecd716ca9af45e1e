"""``cmp-face analyze``: the microphone demo's analysis (``docs/ORIGINAL.md`` section 4).

The frontal (unaligned) mesh is compared with user-supplied mean meshes: gender is the nearer
of the mean male and female meshes, face type the nearest of the Wide, Skinny, Regular and Slim
meshes, by ``||pred - mean|| / N``; the four measurements are reported as percent difference
from the chosen gender's mean mesh, as the release's ``demo_mic.py`` prints them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.mesh_read import read_mesh
from runtime.metrics import DISTANCES, N_VERTICES, measurements, nearest, percent_difference

__all__ = ["Analysis", "GENDERS", "FACE_TYPES", "analyze", "load_means"]

# Order decides ties as the release does: female unless male is strictly nearer; face types by
# np.argsort over (wide, skinny, regular, slim), i.e. the first of equals.
GENDERS = ("female", "male")
FACE_TYPES = ("wide", "skinny", "regular", "slim")


def load_means(folder: Path, n_vertices: int = N_VERTICES) -> dict[str, np.ndarray]:
    """``male``, ``female``, ``regular``, ``slim``, ``skinny``, ``wide`` meshes from ``folder``
    (``<name>.obj``, else ``<name>.npy``), each ``(n_vertices, 3)``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: --means folder not found")
    found, missing = {}, []
    for name in GENDERS + FACE_TYPES:
        path = next((folder / f"{name}{s}" for s in (".obj", ".npy") if (folder / f"{name}{s}").is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise InputError(f"{folder}: missing mean mesh(es) {', '.join(f'{m}.obj' for m in missing)} "
                         "(each may also be .npy)")
    return {name: read_mesh(path, n_vertices) for name, path in found.items()}


@dataclass
class Analysis:
    """What :func:`analyze` found. ``measurements`` maps each distance to this face's value,
    the chosen gender mean's value and the percent difference."""

    gender: str
    gender_distances: dict[str, float]
    face_type: str
    face_type_distances: dict[str, float]
    measurements: dict[str, dict[str, float]]
    vertex_distance: np.ndarray  # (N,) per-vertex distance to the chosen gender's mean mesh

    def as_json(self) -> dict:
        return {"gender": self.gender, "gender_distances": self.gender_distances,
                "face_type": self.face_type, "face_type_distances": self.face_type_distances,
                "reference": f"mean {self.gender}", "measurements": self.measurements}


def analyze(vertices: np.ndarray, means: dict[str, np.ndarray]) -> Analysis:
    """Gender, face type and the four measurements of a frontal ``(N, 3)`` mesh."""
    v = np.asarray(vertices, dtype=np.float64)
    gender, g_dist = nearest(v, {k: means[k] for k in GENDERS})
    face_type, t_dist = nearest(v, {k: means[k] for k in FACE_TYPES})
    reference = means[gender]
    ours, theirs = measurements(v, "prediction"), measurements(reference, f"mean {gender}")
    percent = percent_difference(v, reference, "prediction", f"mean {gender}")
    table = {k: {"value": ours[k], "mean": theirs[k], "percent": percent[k]} for k in DISTANCES}
    per_vertex = np.linalg.norm(v - reference, axis=1)
    return Analysis(gender, g_dist, face_type, t_dist, table, per_vertex)
