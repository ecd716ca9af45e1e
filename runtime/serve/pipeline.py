"""What the server runs: one Predictor behind two models of the Open Inference Protocol.

``cmp_<pipeline>`` takes ``samples`` (16 kHz int16-scale values, INT16 or FP32, ``[B, S]``)
and answers the fused ``voice2mesh_<pipeline>`` graph's outputs; ``cmp_<pipeline>_fbank``
takes the release's normalised ``fbank`` (FP32 ``[B, T, 64]``). This module is protocol only:

* :class:`RequestInputs`: a request body -> model items (decompress, parse, read and VAD audio,
  log-mel): the CPU stage, run in the server's worker processes; it holds no model;
* :class:`ServedPipeline`: the batched model stage (the Predictor's own ``infer``) and the answers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from runtime.audio import SAMPLE_RATE
from runtime.dtypes import of_numpy
from runtime.errors import InputError
from runtime.features import N_MELS, check_fbank
from runtime.predictor import Outputs, Predictor
from runtime.prepare import InputPreparer, Item, check_length
from runtime.result import Prediction
from runtime.runners import TensorInfo
from runtime.serve.protocol import (InferRequest, ProtocolError, decompress, json_bytes_bound, number_param,
                                    parse_infer_request)
from runtime.stages import Stages

FRAMES_PER_S = 100
MAX_REQUEST_BATCH = 32  # utterances in one infer request (Triton's max_batch_size in our repository)


def tensor_spec(info: TensorInfo) -> dict:
    """A runner's TensorInfo as protocol metadata (symbolic dimensions are -1)."""
    return {"name": info.name, "datatype": of_numpy(info.dtype).protocol,
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in info.shape]}


@dataclass
class Limits:
    max_body_bytes: int = 32 << 20     # request body (audio file or tensors), also after gzip/deflate
    max_audio_s: float = 60.0          # after decoding, before VAD; fbank: frames / 100
    max_queue: int = 64                # requests admitted to the CPU and model stages at once
    timeout_s: float = 30.0            # per-request deadline, from admission to answer (504 after)
    header_timeout_s: float = 10.0     # a connection's request line and headers must arrive by then
    body_timeout_s: float = 30.0       # a request's body must arrive by then (408 after)
    max_json_bytes: int = 64 << 20     # the largest JSON answer (binary outputs are not bounded by it)
    max_receiving_bytes: int | None = None  # bodies being received, all requests together (default 4 bodies)

    @property
    def receiving_budget(self) -> int:
        return self.max_receiving_bytes or 4 * self.max_body_bytes


@dataclass
class Parsed:
    """A request after the CPU stage: its model items and what the answer needs."""

    items: list[Item]
    request: InferRequest | None = None
    notes: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)


class RequestInputs:
    """The CPU stage of a request: no model here, so it runs in worker processes (webrtcvad and the
    decoders hold the GIL). Every problem is an InputError (400) or a ProtocolError."""

    def __init__(self, limits: Limits, frontend: str, output_names: list[str], output_shapes: dict[str, list[int]],
                 model_names: tuple[str, str]) -> None:
        self.limits = limits
        self.preparer = InputPreparer(frontend, vad=True, max_bytes=limits.max_body_bytes,
                                      limit_names={"max_bytes": "the server's --max-body-bytes",
                                                   "max_seconds": "the server's --max-audio-s"})
        self.output_names = output_names
        self.output_shapes = output_shapes   # per output, -1 for the batch
        self.audio_model, self.fbank_model = model_names

    # ------------------------------------------------------------------ the protocol's requests
    def infer(self, name: str, body: bytes, header_length: str | None, encoding: str) -> Parsed:
        stages = Stages()
        limit = self.limits.max_body_bytes
        if encoding != "identity":  # tritonclient's request_compression_algorithm
            body = decompress(body, encoding, limit)
        req = parse_infer_request(body, header_length, limit)
        audio = name == self.audio_model
        wanted_input = "samples" if audio else "fbank"
        if set(req.inputs) != {wanted_input}:
            raise InputError(f"model '{name}' takes one input named '{wanted_input}', got "
                             f"{', '.join(repr(k) for k in req.inputs)}")
        for out in req.outputs or []:
            if out not in self.output_names:
                raise InputError(f"unexpected inference output '{out}' for model '{name}' "
                                 f"(it has {', '.join(self.output_names)})")
        sample_rate, vad = self._options(req.parameters, audio)
        batch = req.inputs[wanted_input]
        self._check_batch(batch, wanted_input, 2 if audio else 3)
        self._check_json_size(req, batch.shape[0])
        stages.lap("parse")
        notes: list[str] = []
        if audio:
            items = self.samples(req.inputs["samples"], sample_rate, vad, stages, notes)
        else:
            items = self.fbank(req.inputs["fbank"], stages, notes)
        req.inputs = {}  # not needed for the answer: not sent back from the worker process
        return Parsed(items, req, notes, dict(stages))

    def audio_file(self, data: bytes, vad: bool) -> Parsed:
        """An audio file's bytes (any format the CLI reads) -> one model item, and warnings."""
        stages = Stages()
        notes: list[str] = []
        samples = self.preparer.samples(data, None, vad, stages, notes, max_seconds=self.limits.max_audio_s,
                                        name="the request's audio")
        return Parsed([self.preparer.from_samples(samples, stages, notes)], notes=notes, stages=dict(stages))

    # ------------------------------------------------------------------ checks and conversions
    def _options(self, params: dict, audio: bool) -> tuple[float | None, bool]:
        """The request parameters ``sample_rate`` and ``vad`` (others, e.g. the client's
        ``binary_data_output``, are the protocol's or ignored, as Triton ignores unknown ones)."""
        from runtime.audio import MAX_RATE, MIN_RATE

        sample_rate, vad = params.get("sample_rate"), params.get("vad", False)
        if not audio and (sample_rate is not None or "vad" in params):
            raise InputError("parameters 'sample_rate' and 'vad' apply to audio ('samples') models only")
        if sample_rate is not None:
            sample_rate = number_param(sample_rate, "sample_rate")
            if not MIN_RATE <= sample_rate <= MAX_RATE:
                raise InputError(f"absurd sample rate: {sample_rate:g} Hz (supported: {MIN_RATE} to {MAX_RATE} Hz)")
        if not isinstance(vad, bool):
            raise InputError(f"parameter 'vad' must be true or false, got {vad!r}")
        return sample_rate, vad

    def _check_json_size(self, req: InferRequest, batch: int) -> None:
        """Refuse, before any model work, an answer whose JSON would exceed ``max_json_bytes``."""
        wanted = req.outputs or self.output_names
        values = sum(batch * math.prod(d for d in self.output_shapes[n] if d > 0)
                     for n in wanted if not req.binary.get(n, req.binary.get("*", False)))
        size = json_bytes_bound(values)
        if size > self.limits.max_json_bytes:
            raise InputError(f"the JSON answer would take up to {size / 1e6:.0f} MB, more than this server's limit "
                             f"of {self.limits.max_json_bytes / 1e6:.0f} MB: ask for binary outputs (request "
                             "parameter binary_data_output, or binary_data on each output; tritonclient: "
                             "binary_data=True)")

    def _check_duration(self, n: int, rate: float, unit: str = "samples") -> None:
        seconds = n / rate
        if seconds > self.limits.max_audio_s:
            raise ProtocolError(413, f"audio of {seconds:.1f} s ({n} {unit}) is longer than this server's "
                                     f"limit of {self.limits.max_audio_s:g} s")

    @staticmethod
    def _check_batch(batch: np.ndarray, name: str, ndim: int) -> None:
        if batch.ndim != ndim or 0 in batch.shape or (ndim == 3 and batch.shape[2] != N_MELS):
            want = "[B, S] with B, S >= 1" if ndim == 2 else f"[B, T, {N_MELS}] with B, T >= 1"
            raise InputError(f"input '{name}': expected shape {want}, got {list(batch.shape)}")
        if batch.shape[0] > MAX_REQUEST_BATCH:
            raise InputError(f"input '{name}': batch of {batch.shape[0]} exceeds the limit of {MAX_REQUEST_BATCH}")

    def samples(self, batch: np.ndarray, sample_rate: float | None, vad: bool, stages: Stages,
                notes: list[str] | None = None) -> list[Item]:
        """``[B, S]`` int16-scale samples. Used as given unless ``sample_rate`` or ``vad`` is
        set: then each row takes the CLI's audio path (resampled with soxr, rounded to int16)."""
        self._check_batch(batch, "samples", 2)
        if batch.dtype not in (np.int16, np.float32):
            raise InputError(f"input 'samples': datatype must be INT16 or FP32, got {batch.dtype}")
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
                row = self.preparer.samples(source, sample_rate or SAMPLE_RATE, vad, stages)
            items.append(self.preparer.from_samples(row, stages, notes))
        return items

    def fbank(self, batch: np.ndarray, stages: Stages, notes: list[str] | None = None) -> list[Item]:
        self._check_batch(batch, "fbank", 3)
        self._check_duration(batch.shape[1], FRAMES_PER_S, "frames")
        check_length(batch.shape[1], "fbank", notes)
        items = [("fbank", check_fbank(row, "input 'fbank'")) for row in batch]
        stages.lap("features")
        return items


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

    def request_inputs(self) -> RequestInputs:
        """The CPU stage of this pipeline's requests (picklable: for the worker processes)."""
        return RequestInputs(self.limits, self.predictor.frontend, self.output_names,
                             {o["name"]: o["shape"] for o in self.outputs}, self.model_names)

    def metadata(self, name: str) -> dict:
        return {"name": name, "versions": ["1"], "platform": "cmp-face",
                "inputs": self.inputs[name], "outputs": self.outputs}

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
