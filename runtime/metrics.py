"""The release's face-size metrics (``docs/ORIGINAL.md`` sections 4 and 5), numpy only.

* ARE, absolute ratio error (section 5, the release's ``cal_size_ARE.py``): four distances
  between vertex pairs, each divided by the OICD (outer inter-canthal distance, vertices 2217
  and 14607), after scaling the prediction so that its OICD equals the target's; the error of
  a distance is ``|pred ratio - target ratio|``. The paper's "mean" is the mean of the four.
* Keypoint error (section 5, ``cal_size_kpts.py``): after the same scaling, the L2 norm of the
  difference of the flattened (x, y, z interleaved) coordinates at user-supplied indices,
  divided by ``sqrt(height * width)`` of the target (y range times x range).
* Aggregation: per identity the mean over its predictions, then the mean over identities.
* The microphone demo's analysis (section 4): nearest mean mesh by ``||pred - mean|| / N``
  (Frobenius norm over all coordinates, divided by the vertex count), and the four distances
  as percent difference from the chosen mean.

Vertices are ``(N, 3)`` in the release's vertex order (N = 53215); indices are 0-based, as the
release's numpy code uses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from runtime.errors import InputError

__all__ = ["DISTANCES", "DISTANCE_LABELS", "N_VERTICES", "OICD_PAIR", "Scores", "aggregate", "check_keypoints",
           "has_landmarks", "keypoint_error", "measurements", "mesh_distance", "nearest", "oicd", "percent_difference",
           "ratio_errors", "ratios", "scale_to_target", "score"]

#: Vertex count of the release's 3DMM mesh.
N_VERTICES = 53215
#: Outer inter-canthal distance: the scale reference of the ARE (section 5).
OICD_PAIR = (2217, 14607)
#: The four measured distances, in the order of the release's scripts (sections 4 and 5).
DISTANCES: dict[str, tuple[int, int]] = {
    "forehead": (1678, 42117),
    "cheek": (2294, 13635),
    "ear": (20636, 34153),
    "midline": (2130, 15003),
}
#: How tables and figures name them.
DISTANCE_LABELS = {"forehead": "forehead", "cheek": "cheek-to-cheek", "ear": "ear-to-ear", "midline": "midline"}

_LARGEST_INDEX = max(max(p) for p in [OICD_PAIR, *DISTANCES.values()])


def has_landmarks(n_vertices: int) -> bool:
    """Whether a mesh of ``n_vertices`` holds the vertex indices the ARE measures (the release's
    3DMM topology); another mesh (e.g. a user's own basis) has no such landmarks."""
    return n_vertices > _LARGEST_INDEX


def _vertices(v, name: str) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind not in "biuf" or a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"{name}: expected an (N, 3) array of vertices, got {a.dtype} with shape {a.shape}")
    if a.shape[0] <= _LARGEST_INDEX:
        raise InputError(f"{name}: {a.shape[0]} vertices is too few for the release's vertex indices "
                         f"(up to {_LARGEST_INDEX}); expected {N_VERTICES}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise InputError(f"{name}: NaN or infinite coordinates")
    return a


def _length(v: np.ndarray, pair: tuple[int, int]) -> float:
    return float(np.linalg.norm(v[pair[0]] - v[pair[1]]))


def oicd(vertices, name: str = "vertices") -> float:
    """Outer inter-canthal distance: ``|v[2217] - v[14607]|`` (section 5)."""
    return _length(_vertices(vertices, name), OICD_PAIR)


def measurements(vertices, name: str = "vertices") -> dict[str, float]:
    """The four distances (forehead, cheek, ear, midline) in the mesh's own units."""
    v = _vertices(vertices, name)
    return {k: _length(v, pair) for k, pair in DISTANCES.items()}


def _nonzero_oicd(v: np.ndarray, name: str) -> float:
    d = _length(v, OICD_PAIR)
    if not d > 0:
        raise InputError(f"{name}: vertices {OICD_PAIR[0]} and {OICD_PAIR[1]} coincide (OICD is 0), "
                         "so the mesh cannot be scaled")
    return d


def scale_to_target(pred, target, pred_name: str = "prediction", target_name: str = "target") -> np.ndarray:
    """``pred`` scaled so that its OICD equals ``target``'s (section 5). Returns a new array."""
    p, t = _vertices(pred, pred_name), _vertices(target, target_name)
    return p * (_nonzero_oicd(t, target_name) / _nonzero_oicd(p, pred_name))


def ratios(vertices, name: str = "vertices") -> dict[str, float]:
    """Each of the four distances divided by the OICD."""
    v = _vertices(vertices, name)
    d = _nonzero_oicd(v, name)
    return {k: _length(v, pair) / d for k, pair in DISTANCES.items()}


def ratio_errors(pred, target, pred_name: str = "prediction", target_name: str = "target") -> dict[str, float]:
    """ARE per distance: ``|pred ratio - target ratio|`` after the OICD scaling (section 5)."""
    scaled = scale_to_target(pred, target, pred_name, target_name)
    rp, rt = ratios(scaled, pred_name), ratios(target, target_name)
    return {k: abs(rp[k] - rt[k]) for k in DISTANCES}


def check_keypoints(keypoints, n_vertices: int = N_VERTICES, name: str = "keypoints") -> np.ndarray:
    """Indices into the flattened ``(3 * n_vertices,)`` coordinates (like the release's
    ``keypoints_sim.npy``) as a 1-D int64 array, or InputError."""
    k = np.asarray(keypoints)
    if k.dtype.kind not in "iu" or k.ndim != 1 or k.size == 0:
        raise InputError(f"{name}: expected a non-empty 1-D array of integer indices, got {k.dtype} "
                         f"with shape {k.shape}")
    if k.min() < 0 or k.max() >= 3 * n_vertices:
        bad = int(k.min()) if k.min() < 0 else int(k.max())
        raise InputError(f"{name}: index {bad} is outside the {3 * n_vertices} flattened coordinates "
                         f"(x, y, z interleaved) of a {n_vertices}-vertex mesh")
    return k.astype(np.int64)


def keypoint_error(pred, target, keypoints, pred_name: str = "prediction", target_name: str = "target") -> float:
    """Section 5: ``|flat(scaled pred)[k] - flat(target)[k]| / sqrt(height * width)`` with
    height = y range and width = x range of the target."""
    scaled = scale_to_target(pred, target, pred_name, target_name)
    t = _vertices(target, target_name)
    k = check_keypoints(keypoints, t.shape[0])
    height = float(t[:, 1].max() - t[:, 1].min())
    width = float(t[:, 0].max() - t[:, 0].min())
    if not height * width > 0:
        raise InputError(f"{target_name}: the target's x or y range is 0, the keypoint error is undefined")
    return float(np.linalg.norm(scaled.reshape(-1)[k] - t.reshape(-1)[k]) / np.sqrt(height * width))


def score(pred, target, keypoints=None, pred_name: str = "prediction",
          target_name: str = "target") -> dict[str, float]:
    """One prediction's ARE per distance, plus ``"keypoint"`` when ``keypoints`` are given."""
    out = ratio_errors(pred, target, pred_name, target_name)
    if keypoints is not None:
        out["keypoint"] = keypoint_error(pred, target, keypoints, pred_name, target_name)
    return out


@dataclass
class Scores:
    """Aggregated scores: ``are`` per distance plus ``"mean"`` (of the four), ``keypoint_error``
    (None without keypoints), counts, and the same values per identity."""

    are: dict[str, float]
    keypoint_error: Optional[float]
    identities: int
    predictions: int
    per_identity: dict[str, dict] = field(default_factory=dict)

    def as_json(self) -> dict:
        out: dict = {"are": self.are}
        if self.keypoint_error is not None:
            out["keypoint_error"] = self.keypoint_error
        out |= {"identities": self.identities, "predictions": self.predictions, "per_identity": self.per_identity}
        return out


def _mean_of(rows: Sequence[Mapping[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def aggregate(per_identity: Mapping[str, Iterable[Mapping[str, float]]]) -> Scores:
    """Section 5's averaging: the mean over each identity's predictions, then the mean of those
    means over identities (every identity weighs the same, whatever its number of predictions).
    ``per_identity`` maps an identity to its predictions' :func:`score` dicts."""
    means: dict[str, dict] = {}
    count = 0
    for identity, rows in per_identity.items():
        rows = list(rows)
        if not rows:
            raise InputError(f"identity {identity!r}: no predictions to average")
        count += len(rows)
        are = {k: _mean_of(rows, k) for k in DISTANCES}
        are["mean"] = float(np.mean([are[k] for k in DISTANCES]))
        entry: dict = {"predictions": len(rows), "are": are}
        if all("keypoint" in r for r in rows):
            entry["keypoint_error"] = _mean_of(rows, "keypoint")
        means[identity] = entry
    if not means:
        raise InputError("no identities to average")
    entries = list(means.values())
    are = {k: float(np.mean([e["are"][k] for e in entries])) for k in DISTANCES}
    are["mean"] = float(np.mean([are[k] for k in DISTANCES]))
    keypoint = float(np.mean([e["keypoint_error"] for e in entries])) \
        if all("keypoint_error" in e for e in entries) else None
    return Scores(are, keypoint, len(means), count, means)


# --------------------------------------------------------------------------- analysis (section 4)


def mesh_distance(pred, reference, pred_name: str = "prediction", reference_name: str = "reference") -> float:
    """The microphone demo's distance: ``||pred - reference|| / N`` (Frobenius norm of the
    ``(N, 3)`` difference divided by the vertex count N, section 4)."""
    p, r = _vertices(pred, pred_name), _vertices(reference, reference_name)
    if p.shape != r.shape:
        raise InputError(f"{reference_name}: {r.shape[0]} vertices, but {pred_name} has {p.shape[0]}")
    return float(np.linalg.norm(p - r) / p.shape[0])


def nearest(pred, references: Mapping[str, np.ndarray]) -> tuple[str, dict[str, float]]:
    """The reference nearest to ``pred`` by :func:`mesh_distance`, and every distance. Ties go to
    the first reference in ``references``' order."""
    if not references:
        raise InputError("nearest: no reference meshes")
    distances = {name: mesh_distance(pred, ref, reference_name=name) for name, ref in references.items()}
    return min(distances, key=distances.__getitem__), distances


def percent_difference(pred, reference, pred_name: str = "prediction",
                       reference_name: str = "reference") -> dict[str, float]:
    """The four distances of ``pred`` as percent difference from ``reference``'s:
    ``(d_pred - d_ref) / d_ref * 100`` (section 4; unscaled, on the frontal mesh)."""
    mp, mr = measurements(pred, pred_name), measurements(reference, reference_name)
    for k, d in mr.items():
        if not d > 0:
            raise InputError(f"{reference_name}: its {DISTANCE_LABELS[k]} distance is 0")
    return {k: (mp[k] - mr[k]) / mr[k] * 100.0 for k in DISTANCES}
