"""An independent implementation of the paper's metrics (ORIGINAL.md section 5), written from the
spec with plain Python loops: the reference runtime.metrics is tested against."""
from __future__ import annotations

import math

# The spec's vertex pairs, written out again (not imported) so a typo in the module shows.
SPEC_OICD = (2217, 14607)
SPEC_PAIRS = {"forehead": (1678, 42117), "cheek": (2294, 13635), "ear": (20636, 34153), "midline": (2130, 15003)}


def ref_scores(pred, target, keypoints=None) -> dict[str, float]:
    """Section 5 step by step: scale pred so OICD matches, ratio = D / OICD, |difference|;
    keypoints: flattened x,y,z interleaved, L2 norm / sqrt(y range * x range of the target)."""
    def dist(v, a, b):
        return math.sqrt(sum((float(v[a][k]) - float(v[b][k])) ** 2 for k in range(3)))

    s = dist(target, *SPEC_OICD) / dist(pred, *SPEC_OICD)
    out = {}
    for name, (a, b) in SPEC_PAIRS.items():
        pred_ratio = (s * dist(pred, a, b)) / (s * dist(pred, *SPEC_OICD))
        target_ratio = dist(target, a, b) / dist(target, *SPEC_OICD)
        out[name] = abs(pred_ratio - target_ratio)
    if keypoints is not None:
        total = 0.0
        for k in keypoints:
            row, col = divmod(int(k), 3)
            total += (s * float(pred[row][col]) - float(target[row][col])) ** 2
        ys = [float(r[1]) for r in target]
        xs = [float(r[0]) for r in target]
        out["keypoint"] = math.sqrt(total) / math.sqrt((max(ys) - min(ys)) * (max(xs) - min(xs)))
    return out
