"""What the server runs: one Predictor behind two models of the Open Inference Protocol.

``cmp_<pipeline>`` takes ``samples`` (16 kHz int16-scale values, INT16 or FP32, ``[B, S]``)
and answers the fused ``voice2mesh_<pipeline>`` graph's outputs; ``cmp_<pipeline>_fbank``
takes the release's normalised ``fbank`` (FP32 ``[B, T, 64]``). This module is protocol only:
the CPU stages (``prepare_*``, run on the server's worker pool) and the batched model stage
(:meth:`ServedPipeline.run`, the batcher's thread) are the Predictor's own ``samples``,
``from_samples``, ``prepare`` and ``infer``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.audio import SAMPLE_RATE
from runtime.dtypes import of_numpy
from runtime.errors import InputError
from runtime.features import N_MELS, check_fbank
from runtime.predictor import Outputs, Predictor
from runtime.prepare import Item
from runtime.result import Prediction
from runtime.runners import TensorInfo
from runtime.serve.protocol import ProtocolError
from runtime.stages import Stages

FRAMES_PER_S = 100
MAX_REQUEST_BATCH = 32  # utterances in one infer request (Triton's max_batch_size in our repository)


def tensor_spec(info: TensorInfo) -> dict:
    """A runner's TensorInfo as protocol metadata (symbolic dimensions are -1)."""
    return {"name": info.name, "datatype": of_numpy(info.dtype).protocol,
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in info.shape]}


@dataclass
class Limits:
    max_body_bytes: int = 32 << 20     # request body (audio file or tensors)
    max_audio_s: float = 60.0          # after decoding, before VAD; fbank: frames / 100
    max_queue: int = 64                # requests admitted at once (CPU stages, queue, model)
    timeout_s: float = 30.0            # per-request deadline


class ServedPipeline:
    """A Predictor seen as the server's two models."""

    def __init__(self, predictor: Predictor, limits: Limits) -> None:
        self.predictor = predictor
        self.limits = limits
        self.pipeline = predictor.pipeline
        self.name = f"cmp_{self.pipeline}"
        self.fbank_name = f"{self.name}_fbank"
        models = predictor.models
        # The fused graph's outputs by construction (runtime.frontend_graph.fuse_voice2mesh):
        # the encoder's embedding, then the decoder's outputs in order. A test holds this
        # against voice2mesh_<pipeline>.onnx.
        self.outputs = [tensor_spec(models.encoder.outputs[0])] + [tensor_spec(o) for o in models.decoder.outputs]
        self.output_names = [o["name"] for o in self.outputs]
        self.inputs = {self.name: [{"name": "samples", "datatype": "FP32", "shape": [-1, -1]}],
                       self.fbank_name: [{"name": "fbank", "datatype": "FP32", "shape": [-1, -1, N_MELS]}]}

    @property
    def model_names(self) -> tuple[str, str]:
        return self.name, self.fbank_name

    def metadata(self, name: str) -> dict:
        return {"name": name, "versions": ["1"], "platform": "cmp-face",
                "inputs": self.inputs[name], "outputs": self.outputs}

    # ------------------------------------------------------------------ CPU stages
    def _check_duration(self, n: int, rate: float, unit: str = "samples") -> None:
        seconds = n / rate
        if seconds > self.limits.max_audio_s:
            raise ProtocolError(413, f"audio of {seconds:.1f} s ({n} {unit}) is longer than this server's "
                                     f"limit of {self.limits.max_audio_s:g} s")

    def prepare_samples(self, batch: np.ndarray, sample_rate: float | None, vad: bool,
                        stages: Stages) -> list[Item]:
        """``[B, S]`` int16-scale samples. Used as given unless ``sample_rate`` or ``vad`` is
        set: then each row takes the CLI's audio path (resampled with soxr, rounded to int16)."""
        if batch.ndim != 2 or 0 in batch.shape:
            raise InputError(f"input 'samples': expected shape [B, S] with B, S >= 1, got {list(batch.shape)}")
        if batch.dtype not in (np.int16, np.float32):
            raise InputError(f"input 'samples': datatype must be INT16 or FP32, got {batch.dtype}")
        if batch.shape[0] > MAX_REQUEST_BATCH:
            raise InputError(f"input 'samples': batch of {batch.shape[0]} exceeds the limit of {MAX_REQUEST_BATCH}")
        if batch.dtype == np.float32:
            if not np.isfinite(batch).all():
                raise InputError("input 'samples': contains NaN or infinite values")
            peak = float(np.abs(batch).max())
            if peak > 32768:
                raise InputError(f"input 'samples': values are int16-scale (-32768 to 32767), got a magnitude "
                                 f"of {peak:g} (float audio in [-1, 1]? multiply it by 32768)")
        self._check_duration(batch.shape[1], float(sample_rate or SAMPLE_RATE))
        items = []
        for row in batch:
            if sample_rate is not None or vad:
                # The audio reader takes float arrays as [-1, 1] full scale; ours are int16-scale.
                source = row if row.dtype == np.int16 else row.astype(np.float64) / 32768.0
                row = self.predictor.samples(source, sample_rate or SAMPLE_RATE, vad, stages)
            items.append(self.predictor.from_samples(row, stages))
        return items

    def prepare_fbank(self, batch: np.ndarray, stages: Stages) -> list[Item]:
        if batch.ndim != 3 or batch.shape[2] != N_MELS or 0 in batch.shape:
            raise InputError(f"input 'fbank': expected shape [B, T, {N_MELS}] with B, T >= 1, got {list(batch.shape)}")
        if batch.shape[0] > MAX_REQUEST_BATCH:
            raise InputError(f"input 'fbank': batch of {batch.shape[0]} exceeds the limit of {MAX_REQUEST_BATCH}")
        self._check_duration(batch.shape[1], FRAMES_PER_S, "frames")
        items = [("fbank", check_fbank(row, "input 'fbank'")) for row in batch]
        stages.lap("features")
        return items

    def prepare_audio_file(self, data: bytes, vad: bool, stages: Stages) -> tuple[list[Item], list[str]]:
        """An audio file's bytes (any format the CLI reads) -> one model item, and warnings."""
        notes: list[str] = []
        samples = self.predictor.samples(data, None, vad, stages, notes, max_bytes=self.limits.max_body_bytes,
                                         check=lambda s: self._check_duration(s.shape[0], SAMPLE_RATE))
        return [self.predictor.from_samples(samples, stages)], notes

    # ------------------------------------------------------------------ model stage
    def run(self, items: list[Item]) -> list[Outputs]:
        """The batched model stage (the batcher's thread): the Predictor's own batch entry point."""
        return self.predictor.infer(items)

    def stack(self, rows: list[Outputs], wanted: list[str]) -> dict[str, np.ndarray]:
        """One request's rows as ``[B, ...]`` outputs; a NaN output is the model's fault
        (ModelError, answered 500)."""
        values = [row.checked(k) for k, row in enumerate(rows)]
        return {n: np.stack([v[n] for v in values]) for n in wanted}

    def prediction(self, row: Outputs) -> Prediction:
        return self.predictor.to_prediction(row.checked(0))  # the Predictor's own conversion (display image, pose)

    def warm_up(self) -> None:
        """One batch through every session so the first request does not pay for it."""
        self.run([("fbank", np.zeros((1000, N_MELS), np.float32))])
