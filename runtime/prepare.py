"""The CPU stage of a prediction: any input (audio file or bytes, samples, fbank) -> what the model
stage takes. :class:`runtime.Predictor` is an :class:`InputPreparer` with models; an InputPreparer
alone prepares inputs in processes that hold no models (``predict --workers`` with a GPU, the
server's CPU workers)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np

from runtime.audio import DEFAULT_MAX_BYTES
from runtime.errors import InputError, InputWarning, ModelError
from runtime.features import check_fbank, load_fbank_file
from runtime.stages import Stages

Source = Union[str, os.PathLike, bytes, np.ndarray]
#: What the model stage takes for one utterance: ("fbank", (T, 64) features) or ("samples", (S,) 16 kHz samples).
Item = tuple[str, np.ndarray]
FRONTENDS = ("numpy", "fused")
#: The encoder's receptive field in frames: four convolutions of width 3 and stride 2, then one of
#: width 3 (1 + 2 * (1 + 2 + 4 + 8) + 2 * 16). Shorter speech cannot fill one window of it.
ENCODER_WINDOW_FRAMES = 63
#: Below this much speech a prediction is made, with a warning: the release's utterances are
#: seconds long (its features tile everything to 10 s), a fraction of one second says little.
SHORT_SPEECH_S = 2.0
#: Earlier spelling of "fused" (the fused voice-to-mesh ONNX graph), still accepted with a warning.
DEPRECATED_FRONTENDS = {"onnx": "fused"}


def check_frontend(frontend: str) -> str:
    """``frontend`` by its current name; the old spelling "onnx" gives a DeprecationWarning."""
    if frontend in DEPRECATED_FRONTENDS:
        new = DEPRECATED_FRONTENDS[frontend]
        warnings.warn(f"frontend {frontend!r} is now called {new!r} (the fused voice-to-mesh graph); "
                      f"{frontend!r} will be removed", DeprecationWarning, stacklevel=3)
        return new
    if frontend not in FRONTENDS:
        raise ModelError(f"unknown frontend {frontend!r}: choose one of {', '.join(FRONTENDS)}")
    return frontend


def check_length(frames: int, what: str, notes: list[str] | None) -> None:
    """Refuse speech too short for one encoder window; warn (InputWarning, and in ``notes``) when
    it is short. ``frames``: 100 per second, as the log-mel has them."""
    seconds = max(frames - 1, 0) / 100  # the samples that many frames need: 160 each
    speech = "speech" if what == "audio" else "features"
    if frames < ENCODER_WINDOW_FRAMES:
        raise InputError(f"{seconds:.2f} s of {speech} ({frames} frames) is too short: the encoder needs at least "
                         f"{ENCODER_WINDOW_FRAMES} frames ({(ENCODER_WINDOW_FRAMES - 1) / 100:.2f} s) to see "
                         "one window; give a few seconds of voice")
    if seconds < SHORT_SPEECH_S:
        note = (f"only {seconds:.1f} s of {speech}: the model was made for utterances of several seconds; below "
                f"{SHORT_SPEECH_S:g} s the face says little about the voice")
        warnings.warn(note, InputWarning, stacklevel=4)
        if notes is not None:
            notes.append(note)


class InputPreparer:
    """Reads, VADs and featurises inputs as a Predictor with these options would.

    ``frontend`` "fused" keeps audio as samples (the fused graph computes the log-mel); ``vad``
    removes silence as the release does; ``max_bytes`` is the largest file accepted (None: no limit).
    """

    def __init__(self, frontend: str = "numpy", vad: bool = True, max_bytes: int | None = DEFAULT_MAX_BYTES,
                 limit_names: dict[str, str] | None = None) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                      or max_bytes < 1):
            raise InputError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        self.frontend = check_frontend(frontend)
        self.vad = vad
        self.max_bytes = max_bytes
        # How messages name the limits: the library's keywords, or a command line's options.
        self.limit_names = dict(limit_names or {})

    def prepare(self, source: Source, sample_rate: int | None = None, vad: bool | None = None,
                clock: Stages | None = None, notes: list[str] | None = None) -> Item:
        """One input -> what the model stage (:meth:`infer`) takes.

        ``source``: a ``.npy`` file or ``(T, 64)`` float array of ready features (used as is,
        like the release's ``voice2face_processed``); an audio file (path or bytes); or a 1-D/2-D
        audio array with ``sample_rate``. Audio is read, VAD'd (unless ``vad`` is False) and turned
        into log-mel features, or kept as samples for the fused graph. The reader's warnings are
        emitted and appended to ``notes``; ``clock`` gets the time of each stage.
        """
        clock = clock if clock is not None else Stages()
        if self._is_fbank(source, sample_rate):
            if isinstance(source, np.ndarray):
                fbank = check_fbank(source)
            else:
                fbank = load_fbank_file(source, max_bytes=self.max_bytes,
                                        limit_name=self.limit_names.get("max_bytes", "max_bytes"))
            check_length(fbank.shape[0], "fbank", notes)
            clock.lap("features")
            return "fbank", fbank
        return self.from_samples(self.samples(source, sample_rate, vad, clock, notes), clock, notes)

    def features(self, source: Source, sample_rate: int | None = None, vad: bool | None = None) -> np.ndarray:
        """The normalised ``(T, 64)`` fbank the encoder sees (also with the fused frontend)."""
        kind, value = self.prepare(source, sample_rate, vad)
        if kind == "fbank":
            return value
        from runtime.fbank import compute_fbank

        return compute_fbank(value, vad=False)

    def samples(self, source: Source, sample_rate: float | None = None, vad: bool | None = None,
                clock: Stages | None = None, notes: list[str] | None = None, *,
                max_seconds: float | None = None, name: str = "<bytes>") -> np.ndarray:
        """Audio -> 16 kHz int16 samples, after voice activity detection unless switched off: the
        one path from audio to samples. The reader's warnings are emitted and appended to ``notes``.
        ``max_seconds`` bounds the duration while decoding (a server's limit); ``name`` is what
        messages call a source given as bytes."""
        from runtime.audio import load_audio_with_warnings
        from runtime.vad import remove_silence

        clock = clock if clock is not None else Stages()
        samples, found = load_audio_with_warnings(source, sample_rate, max_bytes=self.max_bytes,
                                                  max_seconds=max_seconds, limit_names=self.limit_names, name=name)
        for note in found:
            warnings.warn(note, InputWarning, stacklevel=3)
        if notes is not None:
            notes.extend(found)
        clock.lap("audio")
        if self.vad if vad is None else vad:
            samples = remove_silence(samples)
            clock.lap("vad")
        return samples

    def from_samples(self, samples: np.ndarray, clock: Stages | None = None, notes: list[str] | None = None) -> Item:
        """16 kHz samples (int16, or float32 int16-scale values used as given) -> a model item:
        the samples themselves for the fused graph, else their log-mel features. Both frontends
        refuse audio without signal alike, and speech too short for the encoder (short speech
        gives a warning, appended to ``notes``)."""
        from runtime.fbank import check_signal, compute_fbank, log_mel, normalise, num_frames

        clock = clock if clock is not None else Stages()
        check_length(num_frames(samples.shape[0]), "audio", notes)
        if self.frontend == "fused":
            check_signal(samples)  # the graph computes the fbank: refuse what numpy refuses
            return "samples", samples
        if samples.dtype == np.int16:
            fbank = compute_fbank(samples, vad=False)  # VAD (if any) done before
        else:
            check_signal(samples)
            fbank = normalise(log_mel(samples))
        clock.lap("fbank")
        return "fbank", fbank

    @staticmethod
    def _is_fbank(source: Source, sample_rate: int | None) -> bool:
        """Arrays without a sample rate and ``.npy`` files are features; the rest is audio."""
        if isinstance(source, np.ndarray):
            if sample_rate is None and source.ndim == 1:
                raise InputError("a 1-D array is audio: pass sample_rate=... (or give (T, 64) fbank features)")
            return sample_rate is None
        if isinstance(source, (str, os.PathLike)):
            return Path(source).suffix.lower() == ".npy"
        if isinstance(source, (bytes, bytearray, memoryview)):
            return False
        raise InputError(f"unsupported input type {type(source).__name__}: give a path or a numpy array")
