"""``cmp-face evaluate``: score a folder of predicted meshes against ground truth in the paper's
metric (ARE, ``docs/ORIGINAL.md`` section 5), with the release's folder conventions.

Predictions: ``PRED/<identity>/**`` - every ``.obj``, and every ``.npy`` holding an ``(N, 3)``
array, is one prediction of that identity (other ``.npy`` files, e.g. ``depth.npy``, are
skipped); a folder holding ``mesh_frontal.obj`` (the unsupervised output of
``cmp-face predict``) counts that file instead of its ``mesh.obj``. Hidden files and folders
(e.g. an interrupted run's staging folder) are ignored.
Ground truth: ``GT/<identity>.xyz`` (or ``.npy`` / ``.obj``), or a folder ``GT/<identity>/``
holding exactly one ``.xyz`` (the Voxceleb-3D validation layout; without an ``.xyz``, exactly
one ``.npy`` or ``.obj``). Meshes are read one at a time, so memory does not grow with the
number of predictions.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from runtime.errors import InputError
from runtime.mesh_read import MAX_FILE_BYTES, not_a_file, npy_shape, read_mesh, read_npy
from runtime.metrics import N_VERTICES, Scores, aggregate, check_keypoints, score

__all__ = ["evaluate_folders", "find_ground_truth", "find_predictions", "load_keypoints"]

PREDICTION_SUFFIXES = (".obj", ".npy")
TRUTH_SUFFIXES = (".xyz", ".npy", ".obj")
FRONTAL = "mesh_frontal.obj"
ALIGNED = "mesh.obj"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def find_predictions(identity_dir: Path) -> tuple[list[Path], list[Path]]:
    """``(predictions, skipped)`` below one identity folder, sorted; ``skipped`` are ``.npy``
    files that are not ``(N, 3)`` arrays."""
    files = sorted(p for p in identity_dir.rglob("*")
                   if p.suffix.lower() in PREDICTION_SUFFIXES and not _hidden(p, identity_dir) and p.is_file())
    frontal = {p.parent for p in files if p.name == FRONTAL}
    predictions, skipped = [], []
    for p in files:
        if p.name == ALIGNED and p.parent in frontal:
            continue  # the unsupervised pipeline's aligned mesh: its frontal twin is scored
        if p.suffix.lower() == ".npy":
            shape = npy_shape(p)
            if len(shape) != 2 or shape[1] != 3:
                skipped.append(p)
                continue
        predictions.append(p)
    return predictions, skipped


def find_ground_truth(gt_dir: Path, identity: str) -> Optional[Path]:
    """The ground-truth file of ``identity``, None when there is none."""
    for suffix in TRUTH_SUFFIXES:
        candidate = gt_dir / f"{identity}{suffix}"
        if candidate.is_file():
            return candidate
    folder = gt_dir / identity
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in TRUTH_SUFFIXES and not p.name.startswith(".") and p.is_file())
    xyz = [p for p in files if p.suffix.lower() == ".xyz"]
    chosen = xyz or files
    if len(chosen) > 1:
        names = ", ".join(p.name for p in chosen[:4]) + (", ..." if len(chosen) > 4 else "")
        raise InputError(f"{folder}: holds {len(chosen)} ground-truth files ({names}), expected exactly one")
    return chosen[0] if chosen else None


def load_keypoints(path: Path) -> np.ndarray:
    """Indices from a ``keypoints_sim.npy``-style file (into the flattened 3 * 53215 coordinates)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: keypoints file {'not found' if not path.exists() else not_a_file(path)}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{path}: too large for a keypoints file")
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":  # an .npz (a zip) or anything else
            raise InputError(f"{path}: expected one .npy array of indices")
    return check_keypoints(read_npy(path), N_VERTICES, name=str(path))


@lru_cache(maxsize=4)
def _truth(path: Path) -> np.ndarray:
    return read_mesh(path, N_VERTICES)


def _score(prediction: Path, truth: Path, keypoints: Optional[np.ndarray]) -> dict[str, float]:
    return score(read_mesh(prediction, N_VERTICES), _truth(truth), keypoints, str(prediction), str(truth))


def evaluate_folders(pred_dir: Path, gt_dir: Path, keypoints: Optional[np.ndarray] = None,
                     progress: Callable[[str], None] = lambda message: None, workers: int = 1) -> Scores:
    """ARE (and the keypoint error with ``keypoints``) of every identity under ``pred_dir``:
    per identity averaged over its predictions, then over identities (section 5). ``workers`` > 1
    reads and scores the meshes in that many processes (reading an OBJ is the slow part)."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for name, folder in (("--pred", pred_dir), ("--gt", gt_dir)):
        if not folder.is_dir():
            raise InputError(f"{folder}: {name} folder not found")
    identities = sorted(p.name for p in pred_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not identities:
        raise InputError(f"{pred_dir}: holds no identity folders (expected {pred_dir}/<identity>/.../*.obj)")
    truths = {i: find_ground_truth(gt_dir, i) for i in identities}
    missing = [i for i, t in truths.items() if t is None]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(f"{gt_dir}: no ground truth for {len(missing)} of {len(identities)} identities ({shown}): "
                         f"expected {gt_dir / missing[0]}.xyz (or .npy, .obj) or a folder {gt_dir / missing[0]}/ "
                         "holding one .xyz")
    with ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(workers)) if workers > 1 else None
        return aggregate(_scores(pred_dir, identities, truths, keypoints, progress, pool))


def _scores(pred_dir: Path, identities: list[str], truths: dict[str, Path], keypoints: Optional[np.ndarray],
            progress: Callable[[str], None], pool: ProcessPoolExecutor | None) -> dict[str, list[dict[str, float]]]:
    rows: dict[str, list[dict[str, float]]] = {}
    for identity in identities:
        predictions, skipped = find_predictions(pred_dir / identity)
        if skipped:
            progress(f"{identity}: skipped {len(skipped)} .npy file(s) that are not (N, 3) meshes, "
                     f"e.g. {skipped[0]}")
        if not predictions:
            raise InputError(f"{pred_dir / identity}: no predictions (.obj, or .npy of shape (53215, 3)) "
                             "in this identity folder")
        truth = [truths[identity]] * len(predictions)
        every = [keypoints] * len(predictions)
        rows[identity] = list(pool.map(_score, predictions, truth, every) if pool else map(_score, predictions, truth, every))
        progress(f"{identity}: {len(predictions)} prediction(s) against {truths[identity]}")
    return rows
