"""Calibration statistics: per tensor the largest |x| and a histogram of |x|, measured once and
cached beside the models (``calibration/<graph>-<model sha>-<inputs sha>.npz``) so that trying
another method (max, percentile, entropy) reads them instead of running the model again."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import onnx

from calibration import graph as G
from runtime.atomic import replacing

BINS = 2048
METHODS = ("max", "percentile", "entropy")
PERCENTILE = 99.999
CACHE_DIR = "calibration"
FORMAT = 2  # in the cache file name: a cache written by an older layout is recomputed, never misread


@dataclass
class Stats:
    names: list[str]
    amax: np.ndarray   # (N,) largest |x| per tensor
    hist: np.ndarray   # (N, BINS) counts of |x| over [0, amax]
    vmin: np.ndarray   # (N,) smallest x (signed: 0 after a ReLU, which an unsigned range can use)

    def thresholds(self, method: str) -> dict[str, float]:
        """The clipping threshold T of each tensor (symmetric INT8: scale T / 127)."""
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
        out = {}
        for i, name in enumerate(self.names):
            amax, hist = float(self.amax[i]), self.hist[i]
            if amax <= 0 or hist.sum() == 0:
                out[name] = max(amax, 1e-8)
            elif method == "max":
                out[name] = amax
            elif method == "percentile":
                out[name] = percentile_threshold(hist, amax, PERCENTILE)
            else:
                out[name] = entropy_threshold(hist, amax)
        return out

    def ranges(self, method: str, unsigned: bool = False) -> dict[str, tuple[float, float]]:
        """``(low, high)`` per tensor: ``(-T, T)``, or for unsigned (u8) activations the measured
        minimum clipped to ``-T`` as low (``(0, T)`` after a ReLU: twice the resolution)."""
        t = self.thresholds(method)
        return {n: ((max(float(self.vmin[i]), -t[n]) if unsigned else -t[n]), t[n]) for i, n in enumerate(self.names)}


def percentile_threshold(hist: np.ndarray, amax: float, percentile: float) -> float:
    cdf = np.cumsum(hist) / hist.sum()
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return amax * min(index + 1, len(hist)) / len(hist)


def entropy_threshold(hist: np.ndarray, amax: float, levels: int = 128) -> float:
    """TensorRT's entropy calibration: the threshold whose 128-level quantised distribution of
    |x| has the least KL divergence from the measured one (values beyond it clipped into the
    last bin). Thresholds are tried on a grid of at most ~512 bin counts."""
    hist = hist.astype(np.float64)
    n = len(hist)
    best_kl, best_i = np.inf, n
    for i in range(levels, n + 1, max(1, (n - levels) // 512)):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        body = hist[:i]
        group = np.minimum(np.arange(i) * levels // i, levels - 1)
        sums = np.bincount(group, weights=body, minlength=levels)
        filled = np.bincount(group, weights=(body > 0).astype(np.float64), minlength=levels)
        q = np.where(body > 0, sums[group] / np.maximum(filled[group], 1.0), 0.0)
        if q.sum() == 0:
            continue
        p, q = ref / ref.sum(), q / q.sum()
        q = np.where((p > 0) & (q == 0), 1e-12, q)  # smoothing: a clipped tail bin q never fills
        m = p > 0
        kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return amax * best_i / n


def collect(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]], names: list[str],
            progress: Callable[[int], None] = lambda n: None) -> Stats:
    """Two passes over ``feeds``: the largest |x| of each tensor, then histograms of |x|."""
    feeds = list(feeds)
    types = G.tensor_types(model)
    amax, vmin = np.zeros(len(names)), np.zeros(len(names))
    for values in G.run_all(model, feeds, names, types):
        amax = np.maximum(amax, [float(np.abs(values[n]).max()) if values[n].size else 0.0 for n in names])
        vmin = np.minimum(vmin, [float(values[n].min()) if values[n].size else 0.0 for n in names])
        progress(1)
    hist = np.zeros((len(names), BINS), np.int64)
    for values in G.run_all(model, feeds, names, types):
        for i, n in enumerate(names):
            if amax[i] > 0:
                hist[i] += np.histogram(np.abs(values[n]), bins=BINS, range=(0.0, amax[i]))[0]
        progress(1)
    return Stats(list(names), amax, hist, vmin)


def inputs_key(feeds: Iterable[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            h.update(name.encode())
            h.update(np.ascontiguousarray(feed[name]).tobytes())
    return h.hexdigest()[:16]


def cached(models: Path, graph: str, model_sha: str, feeds: list[Mapping[str, np.ndarray]],
           compute: Callable[[], Stats]) -> tuple[Stats, Path, bool]:
    """Stats from the cache when the model and the inputs are the same, else computed and saved."""
    path = Path(models) / CACHE_DIR / f"{graph}-{model_sha[:16]}-{inputs_key(feeds)}-v{FORMAT}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return Stats([str(s) for s in z["names"]], z["amax"], z["hist"], z["vmin"]), path, True
    stats = compute()
    path.parent.mkdir(exist_ok=True)
    with replacing(path) as tmp:
        np.savez_compressed(tmp, names=np.array(stats.names), amax=stats.amax, hist=stats.hist, vmin=stats.vmin)
    return stats, path, False
