"""The one stage clock: milliseconds per stage of a prediction (Predictor timings, server metrics)."""
from __future__ import annotations

import time


class Stages(dict):
    """``{stage: milliseconds}``; :meth:`lap` adds the time since the previous lap to ``stage``."""

    def __init__(self) -> None:
        super().__init__()
        self._t = time.perf_counter()

    def restart(self) -> None:
        """Start the next lap now (time since the last lap is not counted, e.g. a queue wait)."""
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self[stage] = self.get(stage, 0.0) + (now - self._t) * 1e3
        self._t = now

    def shared(self, count: int) -> dict[str, float]:
        """Each stage divided evenly among ``count`` items, plus their ``total``."""
        share = {k: v / count for k, v in self.items()}
        share["total"] = sum(share.values())
        return share
