"""What every runner is: inputs and outputs described as :class:`TensorInfo`, ``run(feeds)``,
``close()``, a context manager. The backends live in ``ort_runner`` and ``trt_runner``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from runtime.errors import InputError, ModelError
from runtime.stages import Stages

INSTALL_ORT_GPU = "install onnxruntime-gpu (see README, GPU)"


@dataclass(frozen=True)
class TensorInfo:
    """An input or output of a runner: symbolic dims are strings (e.g. "batch")."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]


class Closable:
    """``close()``, and a context manager that calls it."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Runner(Closable):
    """Base class: ``run(feeds) -> {output name: array}``, ``close()``, context manager.

    ``run(..., clock=)``: runners that move data to a device themselves lap ``h2d``, ``graph`` and
    ``d2h`` on the :class:`runtime.stages.Stages` given (ONNX Runtime with bound buffers); the
    others leave it to the caller (host-array sessions: one call does it all; TensorRT: the
    copies are asynchronous on its stream, and timing them apart would need syncs it avoids)."""

    graph: str = ""
    backend: str = ""
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            clock: Stages | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def checked_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds checked against ``inputs``: exact names, same kind of dtype, rank and static dims;
        returned C-contiguous in the input's dtype."""
        if self.closed:
            raise ModelError(f"{self.graph}: this {self.backend} runner is closed")
        names = [i.name for i in self.inputs]
        if set(feeds) != set(names):
            raise InputError(f"{self.graph} takes inputs {', '.join(names)}; got {', '.join(feeds) or 'none'}")
        checked = {}
        for info in self.inputs:
            a = np.asarray(feeds[info.name])
            if a.dtype.kind != info.dtype.kind and not (a.dtype.kind in "iu" and info.dtype.kind == "f"):
                raise InputError(f"{self.graph}: input {info.name!r} must be {info.dtype}, got {a.dtype}")
            static = [(k, d) for k, d in enumerate(info.shape) if isinstance(d, int) and d > 0]
            if a.ndim != len(info.shape) or any(a.shape[k] != d for k, d in static):
                want = "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in info.shape)
                raise InputError(f"{self.graph}: input {info.name!r} has shape {'x'.join(map(str, a.shape))}, "
                                 f"expected {want}")
            checked[info.name] = np.ascontiguousarray(a, dtype=info.dtype)
        return checked

    def output_names(self, outputs: Sequence[str] | None) -> list[str]:
        """``outputs`` checked against this runner's outputs (None: all of them, in order)."""
        known = [o.name for o in self.outputs]
        if outputs is None:
            return known
        unknown = [n for n in outputs if n not in known]
        if unknown:
            raise InputError(f"{self.graph} has no output {', '.join(unknown)} (outputs: {', '.join(known)})")
        return list(outputs)
