"""What the server runs: one Predictor behind two models of the Open Inference Protocol.

``cmp_<pipeline>`` takes ``samples`` (16 kHz int16-scale values, INT16 or FP32, ``[B, S]``)
and answers the fused ``voice2mesh_<pipeline>`` graph's outputs; ``cmp_<pipeline>_fbank``
takes the release's normalised ``fbank`` (FP32 ``[B, T, 64]``). The CPU stages (audio
decoding, VAD, log-mel) are the ``prepare_*`` methods, run on the server's thread pool; the
model stage is :meth:`ServedPipeline.run`, called by the batcher with many utterances at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from runtime.errors import InputError
from runtime.features import N_MELS, check_fbank
from runtime.predictor import Predictor, check_finite
from runtime.result import Prediction
from runtime.serve.protocol import ProtocolError

SAMPLE_RATE = 16000
FRAMES_PER_S = 100
MAX_REQUEST_BATCH = 32  # utterances in one infer request (Triton's max_batch_size in our repository)
_ORT_TYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
              "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
              "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL"}


def tensor_spec(arg) -> dict:
    """A runner's TensorInfo (or an ONNX Runtime NodeArg) as protocol metadata (symbolic
    dimensions are -1)."""
    from runtime.serve.protocol import datatype_of

    datatype = datatype_of(arg.dtype) if hasattr(arg, "dtype") else _ORT_TYPES[arg.type]
    return {"name": arg.name, "datatype": datatype,
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape]}


def _outputs(runner) -> list:
    """A runner's outputs (runtime.runners), or an ONNX Runtime session's."""
    return list(runner.outputs) if hasattr(runner, "outputs") else list(runner.get_outputs())


@dataclass
class Limits:
    max_body_bytes: int = 32 << 20     # request body (audio file or tensors)
    max_audio_s: float = 60.0          # after decoding, before VAD; fbank: frames / 100
    max_queue: int = 64                # requests admitted at once (CPU stages, queue, model)
    timeout_s: float = 30.0            # per-request deadline


class Stages(dict):
    """Milliseconds per stage of one request."""

    def __init__(self) -> None:
        super().__init__()
        self._t = time.perf_counter()

    def restart(self) -> None:
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self[stage] = self.get(stage, 0.0) + (now - self._t) * 1e3
        self._t = now


class ServedPipeline:
    """A Predictor seen as the server's two models."""

    def __init__(self, predictor: Predictor, limits: Limits) -> None:
        self.predictor = predictor
        self.limits = limits
        self.pipeline = predictor.pipeline
        self.name = f"cmp_{self.pipeline}"
        self.fbank_name = f"{self.name}_fbank"
        models = predictor.models
        # The fused graph's outputs by construction (export.frontend_graph.fuse_voice2mesh):
        # the encoder's embedding, then the decoder's outputs in order. A test holds this
        # against voice2mesh_<pipeline>.onnx.
        self.outputs = [tensor_spec(_outputs(models.encoder)[0])] + [tensor_spec(o) for o in _outputs(models.decoder)]
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

    def _from_wave(self, samples: np.ndarray, vad: bool, stages: Stages) -> tuple[str, np.ndarray]:
        """16 kHz samples -> what the model stage takes: log-mel features (numpy frontend) or
        the samples themselves (fused graph)."""
        from runtime.fbank import check_signal, compute_fbank, log_mel, normalise

        if vad:
            from runtime.vad import remove_silence

            samples = remove_silence(samples)
            stages.lap("vad")
        if self.predictor.frontend == "onnx":
            check_signal(samples)  # the graph computes the fbank: refuse what numpy refuses, alike
            return "samples", samples
        if samples.dtype == np.int16:
            fbank = compute_fbank(samples, vad=False)
        else:  # FP32 samples used as given (not rounded to int16)
            check_signal(samples)
            fbank = normalise(log_mel(samples))
        stages.lap("fbank")
        return "fbank", fbank

    def prepare_samples(self, batch: np.ndarray, sample_rate: float | None, vad: bool,
                        stages: Stages) -> list[tuple[str, np.ndarray]]:
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
        rows = []
        for row in batch:
            if sample_rate is not None or vad:
                from runtime.audio import load_audio

                # load_audio reads float arrays as [-1, 1] full scale; ours are int16-scale.
                source = row if row.dtype == np.int16 else row.astype(np.float64) / 32768.0
                row = load_audio(source, SAMPLE_RATE if sample_rate is None else sample_rate)
                stages.lap("audio")
            rows.append(self._from_wave(row, vad, stages))
        return rows

    def prepare_fbank(self, batch: np.ndarray, stages: Stages) -> list[tuple[str, np.ndarray]]:
        if batch.ndim != 3 or batch.shape[2] != N_MELS or 0 in batch.shape:
            raise InputError(f"input 'fbank': expected shape [B, T, {N_MELS}] with B, T >= 1, got {list(batch.shape)}")
        if batch.shape[0] > MAX_REQUEST_BATCH:
            raise InputError(f"input 'fbank': batch of {batch.shape[0]} exceeds the limit of {MAX_REQUEST_BATCH}")
        self._check_duration(batch.shape[1], FRAMES_PER_S, "frames")
        rows = [("fbank", check_fbank(row, "input 'fbank'")) for row in batch]
        stages.lap("features")
        return rows

    def prepare_audio_file(self, data: bytes, vad: bool, stages: Stages) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
        """An audio file's bytes (any format the CLI reads) -> one model item, and warnings."""
        from runtime.audio import load_audio_with_warnings

        samples, notes = load_audio_with_warnings(data, max_bytes=self.limits.max_body_bytes)
        stages.lap("audio")
        self._check_duration(samples.shape[0], SAMPLE_RATE)
        return [self._from_wave(samples, vad, stages)], notes

    # ------------------------------------------------------------------ model stage
    def run(self, items: list[tuple[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """The batched model stage (the batcher's thread): fbank items through ``embed`` and
        ``decode``, sample items through the fused graph; outputs in the fused graph's order."""
        p = self.predictor
        out: list[dict[str, np.ndarray] | None] = [None] * len(items)
        fbanks = {i: a for i, (kind, a) in enumerate(items) if kind == "fbank"}
        waves = {i: a for i, (kind, a) in enumerate(items) if kind == "samples"}
        if fbanks:
            embeddings = p.embed(fbanks.values())
            decoded = p.decode(embeddings)
            for k, i in enumerate(fbanks):
                out[i] = {"embedding": embeddings[k]} | {n: v[k] for n, v in decoded.items()}
        if waves:
            for i, values in p.voice_to_mesh(waves).items():
                out[i] = values
        return [{n: o[n] for n in self.output_names} for o in out]

    def stack(self, rows: list[dict[str, np.ndarray]], wanted: list[str], kinds: list[str]) -> dict[str, np.ndarray]:
        """One request's rows as ``[B, ...]`` outputs; a NaN output is the model's fault
        (the Predictor's own check: ModelError, answered 500)."""
        for k, (row, kind) in enumerate(zip(rows, kinds)):
            check_finite(row, k, fused=kind == "samples")
        return {n: np.stack([r[n] for r in rows]) for n in wanted}

    def prediction(self, out: dict[str, np.ndarray], kind: str) -> Prediction:
        check_finite(out, 0, fused=kind == "samples")
        return self.predictor.to_prediction(out)  # the Predictor's own conversion (display image, pose)

    def warm_up(self) -> None:
        """One batch through every session so the first request does not pay for it."""
        self.run([("fbank", np.zeros((1000, N_MELS), np.float32))])
