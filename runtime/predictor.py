"""``Predictor``: voice (audio or fbank) -> 3D face mesh with ONNX Runtime. No torch."""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from runtime.audio import DEFAULT_MAX_BYTES
from runtime.errors import InputError, ModelError
from runtime.graphs import PipelineGraphs
from runtime.prepare import InputPreparer, Item, Source
from runtime.result import Prediction, display_image
from runtime.runners.base import Closable
from runtime.stages import Stages

MAX_DECODER_BATCH = 32


def _equal_length_groups(lengths: dict[int, int]) -> list[list[int]]:
    """Indices grouped by length, shortest first, at most MAX_DECODER_BATCH per group: only equal
    lengths can share a batch, and engines are built for batches of at most 32."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in lengths.items():
        groups[n].append(i)
    return [groups[n][k:k + MAX_DECODER_BATCH] for n in sorted(groups)
            for k in range(0, len(groups[n]), MAX_DECODER_BATCH)]


@dataclass
class Outputs:
    """One utterance's network outputs (the embedding, then the decoder's, in the fused graph's
    order), or ``fault``: which network produced NaN or infinite values."""

    values: dict[str, np.ndarray]
    fault: str | None = None

    def checked(self, index: int) -> dict[str, np.ndarray]:
        """The values; ModelError naming the stage when they are not finite (``index``: the input's
        position, for the message)."""
        if self.fault:
            raise ModelError(f"{self.fault} for input {index}; the input passed every check, so the model files "
                             "are suspect (rebuild or re-export them)")
        return self.values


def _fault(out: dict[str, np.ndarray], fused: bool) -> str | None:
    """Which network (the stage) and output first holds NaN or inf values; ``out`` lists the
    embedding first, then the decoder's outputs."""
    for name, value in out.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            graph = "voice2mesh" if fused else "encoder" if name == "embedding" else "decoder"
            return f"the {graph} network produced NaN or infinite values in its output {name!r}"
    return None


class Predictor(InputPreparer, Closable):
    """Runs one pipeline of an exported models folder.

    >>> p = Predictor("models/", pipeline="supervised")          # doctest: +SKIP
    >>> r = p.predict("voice.wav"); r.vertices.shape               # doctest: +SKIP
    (53215, 3)

    ``device``: "auto" (CUDA when onnxruntime-gpu provides it, else CPU), "cpu", "cuda" or "cuda:N".
    ``backend``: "auto", "onnxruntime", "onnxruntime-trt" (ONNX Runtime's TensorRT provider) or
    "tensorrt" (native engines from ``cmp-face build-engines``): :mod:`runtime.runners`.
    ``precision``: "fp32", "fp16" or "int8": which ONNX files (or engines) of the folder run.
    ``cuda_graph``: ONNX Runtime CUDA replays a captured CUDA graph per exact input shape (a
    session with that shape fixed, so ONNX Runtime folds every shape computation and places every
    node on the device; the few most recent shapes are kept): for servers that see a few lengths.
    Native TensorRT always captures one graph per exact shape. On a device, ``timings`` split the
    fused graph's time into ``h2d``, ``graph`` and ``d2h``.
    ``vad``: remove silence from audio input as the release does (ignored for fbank input).
    ``frontend``: "numpy" computes the log-mel on the CPU and runs encoder and decoder;
    "fused" runs audio through ``voice2mesh_<pipeline>.onnx`` (log-mel, encoder and decoder in
    one graph: one call per utterance, the better choice on a GPU; "onnx" is its earlier name).
    Both give the same numbers to ~1e-5 (the frontend graph matches the numpy log-mel to 1e-5).
    ``spinning``: let ONNX Runtime's idle threads busy-wait. Off by default: on a small CPU the
    spinning threads steal the cores our numpy and C++ stages need, and the encoder's and
    decoder's thread pools spin against each other (benchmarks/NOTES.md); measure before
    turning it on.
    ``max_bytes``: the largest audio or ``.npy`` file accepted (``None``: no limit); compressed
    audio is also refused when it declares more than this as 16-bit PCM.

    Both frontends refuse audio without signal alike (:mod:`runtime.fbank`: constant samples, or
    a mel filter whose log-mel barely varies), and no prediction is ever NaN or infinite: a
    network stage that produces such values raises :class:`runtime.errors.ModelError`.
    """

    def __init__(self, models: str | os.PathLike, pipeline: str = "supervised", device: str = "auto",
                 threads: int | None = None, vad: bool = True, frontend: str = "numpy",
                 spinning: bool = False, max_bytes: int | None = DEFAULT_MAX_BYTES, backend: str = "auto",
                 precision: str = "fp32", cuda_graph: bool = False) -> None:
        super().__init__(frontend, vad, max_bytes)
        self.models = PipelineGraphs.open(models, pipeline, device, threads, voice2mesh=self.frontend == "fused",
                                          spinning=spinning, backend=backend, precision=precision,
                                          cuda_graph=cuda_graph)
        self.pipeline = pipeline
        self._outputs = [o.name for o in self.models.decoder.outputs]

    @classmethod
    def from_cache(cls, release: str | os.PathLike | None = None, pipeline: str = "supervised",
                   epoch: str | int | None = None, **options) -> "Predictor":
        """A Predictor on the cached models: the synthetic (UNTRAINED) pack when ``release`` is
        None, else the release folder's export. Built once when missing (that needs the export
        extra: :mod:`runtime.plugins`); ``options`` as for the constructor."""
        from runtime.cache import models_for

        return cls(models_for(None if release is None else Path(release), pipeline, epoch), pipeline, **options)

    def close(self) -> None:
        """Release the runners (GPU memory, engines); the Predictor cannot run afterwards."""
        self.models.close()

    @property
    def untrained(self) -> bool:
        """True when the models come from the synthetic (untrained) asset pack."""
        return self.models.untrained

    @property
    def triangles(self) -> np.ndarray:
        return self.models.triangles

    # ------------------------------------------------------------------ model stage
    def infer(self, items: Sequence[Item], clock: Stages | None = None) -> list[Outputs]:
        """The model stage of prepared items (:meth:`prepare`), in one batch: the entry point that
        :meth:`predict_batch` and the server share. Features go through the encoder (equal lengths
        share a run: it averages over time, so padding would change the result) and the decoder
        together; samples through the fused graph, equal lengths together. Each item's outputs are
        checked for NaN and inf (:meth:`Outputs.checked` raises), and ``clock`` gets each
        network's time."""
        clock = clock if clock is not None else Stages()
        outputs: list[Outputs | None] = [None] * len(items)
        fbanks = {i: a for i, (kind, a) in enumerate(items) if kind == "fbank"}
        waves = {i: a for i, (kind, a) in enumerate(items) if kind == "samples"}
        if len(fbanks) + len(waves) != len(items):
            raise InputError(f"unknown item kinds {sorted({k for k, _ in items} - {'fbank', 'samples'})}")
        if waves and self.models.voice2mesh is None:
            raise InputError("samples need the fused voice-to-mesh graph: open the Predictor with frontend='fused'")
        if fbanks:
            embeddings = self.embed(fbanks.values())
            clock.lap("encoder")
            decoded = self.decode(embeddings)
            clock.lap("decoder")
            for k, i in enumerate(fbanks):
                out = {"embedding": embeddings[k]} | {n: v[k] for n, v in decoded.items()}
                outputs[i] = Outputs(out, _fault(out, fused=False))
        if waves:
            for i, out in self.voice_to_mesh(waves, clock).items():
                outputs[i] = Outputs(out, _fault(out, fused=True))
            clock.lap("voice2mesh")
        return outputs  # type: ignore[return-value]

    def predict(self, source: Source, sample_rate: int | None = None, vad: bool | None = None) -> Prediction:
        """Predict the face mesh of one utterance."""
        return self.predict_batch([source], sample_rate, vad)[0]

    def predict_batch(self, sources: Sequence[Source], sample_rate: int | None = None,
                      vad: bool | None = None) -> list[Prediction]:
        """Predict several utterances (:meth:`prepare` each, then one :meth:`infer`). Utterances of
        equal length share an encoder run; all embeddings then go through the decoder together.
        Timings are per batch, divided evenly.

        On the CPU this is no faster than a loop of :meth:`predict` (8 equal-length fbanks on the
        2-core CI machine: 0.94-1.09x of the loop's time): ONNX Runtime already keeps the cores
        busy within one utterance. It is a convenience here; batching pays on a GPU."""
        if len(sources) == 0:
            raise InputError("predict_batch: no inputs")
        clock = Stages()
        notes: list[list[str]] = [[] for _ in sources]
        items = [self.prepare(s, sample_rate, vad, clock, notes[i]) for i, s in enumerate(sources)]
        outputs = self.infer(items, clock)
        results = [self.to_prediction(out.checked(i)) for i, out in enumerate(outputs)]
        for r, found in zip(results, notes):
            r.warnings = found
        clock.lap("postprocess")
        share = clock.shared(len(sources))
        for r in results:
            r.timings = dict(share)
        return results

    def embed(self, fbanks: Iterable[np.ndarray]) -> np.ndarray:
        """(B, 64) embeddings of (T, 64) fbanks, batching those of equal length."""
        fbanks = list(fbanks)
        out = np.empty((len(fbanks), 64), np.float32)
        for idx in _equal_length_groups({i: fb.shape[0] for i, fb in enumerate(fbanks)}):
            batch = np.ascontiguousarray(np.stack([fbanks[i].T for i in idx]))
            out[idx] = self.models.encoder.run({"fbank": batch}, ["embedding"])["embedding"]
        return out

    def decode(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """Decoder outputs for (B, 64) embeddings, in chunks of MAX_DECODER_BATCH."""
        chunks = [self.models.decoder.run({"embedding": embeddings[i:i + MAX_DECODER_BATCH]}, self._outputs)
                  for i in range(0, len(embeddings), MAX_DECODER_BATCH)]
        return {name: np.concatenate([c[name] for c in chunks]) for name in self._outputs}

    def voice_to_mesh(self, waves: dict[int, np.ndarray],
                      clock: Stages | None = None) -> dict[int, dict[str, np.ndarray]]:
        """Run ``voice2mesh_<pipeline>`` on int16 samples, batching equal lengths. A runner that
        moves data to a device laps ``h2d``, ``graph`` and ``d2h`` on ``clock``."""
        runner = self.models.voice2mesh
        out: dict[int, dict[str, np.ndarray]] = {}
        for idx in _equal_length_groups({i: len(w) for i, w in waves.items()}):
            batch = np.stack([waves[i] for i in idx]).astype(np.float32)
            values = runner.run({"samples": batch}, clock=clock)
            for k, i in enumerate(idx):
                out[i] = {n: v[k] for n, v in values.items()}
        return out

    def to_prediction(self, out: dict[str, np.ndarray]) -> Prediction:
        """One utterance's network outputs (the embedding, then the decoder's) as a Prediction."""
        result = Prediction(pipeline=self.pipeline, embedding=out["embedding"], params=out["params"],
                            vertices=out["vertices"], triangles=self.models.triangles, untrained=self.untrained)
        if self.pipeline == "unsupervised":
            result.face_image = display_image(out["image"])
            result.pose_R = out["pose_R"]
            result.pose_offset = out["pose_offset"]
            result.vertices_frontal = out["vertices_frontal"]
        return result
