"""Which input shapes an engine accepts: optimisation profiles derived from our graphs and their use.

Our graphs have one batch axis (axis 0) and at most one time axis:

    samples    (B, S)      frontend, voice2mesh_<pipeline>: 16 kHz samples after VAD
    fbank      (B, 64, T)  encoder: the release tiles every utterance to >= 1000 frames
    embedding  (B, 64)     decoder_<pipeline>

Two profiles per graph: ``batch1`` (batch exactly 1: what a single request runs, tuned for it)
and ``batch32`` (batches of 1..32, tuned for 8, the middle of what the benchmarks time). The
time axis runs from the shortest input the graph accepts up to the serving limit on speech
duration (``max_seconds``); the optimum is 10 s, where the release's tiling puts every shorter
utterance (exactly 1000 frames). Longer input is refused with a clear error at run time
(:func:`select_profile`), never padded or truncated: padding would change the encoder's mean
over time and the per-filter normalisation. No TensorRT needed here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from runtime.errors import InputError, ModelError
from runtime.fbank import MIN_FRAMES, SAMPLE_RATE, num_frames

DEFAULT_MAX_SECONDS = 60.0
MAX_SECONDS_LIMIT = 600.0  # keeps the largest activation buffers of a 32-batch within a few GB
MAX_BATCH = 32
BATCH_OPT = 8
OPT_SECONDS = MIN_FRAMES / 100  # 10 s: every shorter utterance is tiled to this length
# The time axis of each input that has one (input name -> axis).
TIME_AXES = {"samples": 1, "fbank": 2}
# The inputs of each kind of graph, as runtime/graphs.py checks them (the export's contract).
GRAPH_INPUTS = {"encoder": [("fbank", ["batch", 64, "frames"])], "decoder": [("embedding", ["batch", 64])],
                "voice2mesh": [("samples", ["batch", "num_samples"])], "frontend": [("samples", ["batch", "num_samples"])]}


@dataclass(frozen=True)
class ShapeRange:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))


@dataclass(frozen=True)
class Profile:
    name: str
    shapes: dict[str, ShapeRange]

    def fits(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return set(shapes) == set(self.shapes) and all(r.contains(shapes[n]) for n, r in self.shapes.items())

    def to_json(self) -> dict:
        return {"name": self.name, "shapes": {n: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
                                              for n, r in self.shapes.items()}}

    @classmethod
    def from_json(cls, data) -> "Profile":
        """The inverse of :meth:`to_json`; ValueError for anything malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("shapes"), dict):
            raise ValueError("a profile needs 'name' and 'shapes'")
        shapes = {}
        for name, r in data["shapes"].items():
            try:
                dims = [tuple(int(d) for d in r[k]) for k in ("min", "opt", "max")]
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"profile {data['name']!r}: bad shape range for {name!r}") from None
            if len({len(d) for d in dims}) != 1 or not all(a <= b <= c for a, b, c in zip(*dims)):
                raise ValueError(f"profile {data['name']!r}: inconsistent min/opt/max for {name!r}")
            shapes[name] = ShapeRange(*dims)
        return cls(data["name"], shapes)


def check_max_seconds(value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= MAX_SECONDS_LIMIT):
        raise InputError(f"max_seconds must be a number of seconds in (0, {MAX_SECONDS_LIMIT:g}], got {value!r}")
    return float(value)


def time_range(input_name: str, max_seconds: float) -> tuple[int, int, int]:
    """(min, opt, max) of the time axis of ``input_name`` for speech up to ``max_seconds``."""
    longest = int(round(max_seconds * SAMPLE_RATE))
    if input_name == "samples":
        return 1, min(int(OPT_SECONDS * SAMPLE_RATE), longest), longest
    if input_name == "fbank":  # normalise() tiles shorter utterances up to MIN_FRAMES
        return MIN_FRAMES, MIN_FRAMES, max(MIN_FRAMES, num_frames(longest))
    raise KeyError(input_name)


def contract_inputs(graph: str) -> list[tuple[str, list]]:
    """The inputs ``(name, dims)`` that ``graph`` (e.g. ``decoder_supervised``) has by contract."""
    kind = graph.split("_", 1)[0]
    if kind not in GRAPH_INPUTS:
        raise ModelError(f"unknown graph {graph!r}: expected encoder, frontend, decoder_<pipeline> or "
                         "voice2mesh_<pipeline>")
    return GRAPH_INPUTS[kind]


def _is_static(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def derive_profiles(graph: str, inputs: Sequence[tuple[str, Sequence[int | str | None]]],
                    max_seconds: float = DEFAULT_MAX_SECONDS) -> list[Profile]:
    """The ``batch1`` and ``batch32`` profiles of a graph from its inputs ``(name, dims)``;
    a dim is a positive int (static) or a name / None / -1 (dynamic)."""
    max_seconds = check_max_seconds(max_seconds)
    if not inputs:
        raise ModelError(f"{graph}: the graph has no inputs")
    batch_dynamic = [not _is_static(dims[0]) if dims else False for _, dims in inputs]
    profiles = []
    for label, (lo, opt, hi) in (("batch1", (1, 1, 1)), (f"batch{MAX_BATCH}", (1, BATCH_OPT, MAX_BATCH))):
        shapes = {}
        for (name, dims), dynamic_batch in zip(inputs, batch_dynamic):
            if not dims:
                raise ModelError(f"{graph}: input {name!r} is a scalar; cmp-deploy graphs take batched tensors")
            mins, opts, maxs = [], [], []
            for axis, dim in enumerate(dims):
                if _is_static(dim):
                    r = (dim, dim, dim)
                elif axis == 0:
                    r = (lo, opt, hi)
                elif TIME_AXES.get(name) == axis:
                    r = time_range(name, max_seconds)
                else:
                    raise ModelError(f"{graph}: input {name!r} has a dynamic axis {axis} ({dim!r}) that cmp-deploy "
                                     "cannot size: only the batch axis and the time axis of 'samples' (axis 1) "
                                     "or 'fbank' (axis 2) may be dynamic")
                mins.append(r[0]), opts.append(r[1]), maxs.append(r[2])
            shapes[name] = ShapeRange(tuple(mins), tuple(opts), tuple(maxs))
        profiles.append(Profile(label, shapes))
        if not any(batch_dynamic):
            break  # a fixed batch size leaves nothing for a second profile to add
    return profiles


def _seconds(name: str, length: int) -> float:
    return length / SAMPLE_RATE if name == "samples" else (length - 1) * 0.01


def select_profile(profiles: Sequence[Profile], shapes: Mapping[str, Sequence[int]], engine: str,
                   rebuild: str) -> int:
    """Index of the first profile that accepts ``shapes``; else an InputError that says why.

    ``engine`` names the engine in messages, ``rebuild`` is the command that builds it again.
    """
    shapes = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
    for index, profile in enumerate(profiles):
        if profile.fits(shapes):
            return index
    widest = profiles[-1]
    missing = sorted(set(widest.shapes) - set(shapes))
    extra = sorted(set(shapes) - set(widest.shapes))
    if missing or extra:
        raise InputError(f"{engine} takes inputs {', '.join(widest.shapes)}; got {', '.join(shapes) or 'none'}")
    for name, r in widest.shapes.items():
        shape = shapes[name]
        if len(shape) != len(r.min) or any(lo == hi and s != lo for s, lo, hi in zip(shape, r.min, r.max)):
            expected = "x".join(str(lo) if lo == hi else "N" for lo, hi in zip(r.min, r.max))
            raise InputError(f"{engine}: input {name!r} has shape {'x'.join(map(str, shape))}, expected {expected}")
        if shape[0] > r.max[0]:
            raise InputError(f"{engine}: a batch of {shape[0]} is larger than the {r.max[0]} it was built for; "
                             "split the batch")
        axis = TIME_AXES.get(name)
        if axis is not None and shape[axis] > r.max[axis]:
            raise InputError(f"{engine}: {_seconds(name, shape[axis]):.1f} s of speech ({shape[axis]} "
                             f"{'samples' if name == 'samples' else 'frames'}) is longer than the "
                             f"{_seconds(name, r.max[axis]):.1f} s it was built for; split the audio, or rebuild "
                             f"with a larger --max-seconds: {rebuild}")
        if axis is not None and shape[axis] < r.min[axis]:
            what = "samples" if name == "samples" else "frames"
            why = (" (the release tiles every utterance to at least 1000 frames: runtime.fbank.normalise)"
                   if name == "fbank" else "")
            raise InputError(f"{engine}: input {name!r} has {shape[axis]} {what}, fewer than the {r.min[axis]} "
                             f"it accepts{why}")
    raise InputError(f"{engine}: no optimisation profile accepts input shapes "
                     f"{', '.join(f'{n} {tuple(s)}' for n, s in shapes.items())}")
