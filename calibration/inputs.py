"""Real inputs for measuring value ranges and calibrating: utterances from fbank ``.npy`` files,
from audio through our own frontend (VAD on, as the release preprocesses), or the built-in
synthetic voices; a deterministic selection. numpy + runtime, no torch."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runtime.errors import InputError, NoSpeechError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
BUILTIN_VOICES = 4  # seeds 0..3 of runtime.demo_signal.demo_voice, 6 s each


@dataclass
class Utterance:
    name: str
    fbank: np.ndarray                 # (T, 64) float32, normalised as the encoder expects
    samples: np.ndarray | None = None  # float32 speech after VAD (int16 scale) when it came from audio

    def encoder_feed(self) -> dict[str, np.ndarray]:
        return {"fbank": np.ascontiguousarray(self.fbank.T[None], dtype=np.float32)}

    def samples_feed(self) -> dict[str, np.ndarray]:
        if self.samples is None:
            raise InputError(f"{self.name}: came from an fbank file and has no audio samples")
        return {"samples": self.samples[None].astype(np.float32)}


@dataclass
class InputSet:
    """Utterances and a one-line description of where they came from (kept in models.json)."""

    source: str
    utterances: list[Utterance]

    def __len__(self) -> int:
        return len(self.utterances)


def _files(folder: Path, suffixes: Sequence[str], what: str) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: {what} folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        raise InputError(f"{folder}: no {'/'.join(suffixes)} files found")
    return files


def from_fbanks(folder: Path) -> InputSet:
    """Every ``(T, 64)`` ``.npy`` fbank in ``folder`` (sorted by name)."""
    from runtime.features import load_fbank_file

    files = _files(folder, (".npy",), "fbank")
    return InputSet(f"fbanks {Path(folder)} ({len(files)} files)",
                    [Utterance(p.name, load_fbank_file(p)) for p in files])


def from_audio(folder: Path, progress: Callable[[str], None] = lambda m: None) -> InputSet:
    """Every audio file in ``folder`` through VAD and our frontend; files without speech are
    skipped (with a note), a folder without any speech is an error."""
    from runtime.audio import load_audio
    from runtime.fbank import log_mel, normalise
    from runtime.vad import remove_silence

    utterances = []
    files = _files(folder, AUDIO_SUFFIXES, "audio")
    for path in files:
        try:
            speech = remove_silence(load_audio(path))
        except NoSpeechError:
            progress(f"  skipped {path.name}: no speech found")
            continue
        utterances.append(Utterance(path.name, normalise(log_mel(speech)), speech.astype(np.float32)))
    if not utterances:
        raise NoSpeechError(f"{folder}: none of its {len(files)} audio files contains speech")
    return InputSet(f"audio {Path(folder)} ({len(utterances)} files, VAD on)", utterances)


def builtin_voices(count: int = BUILTIN_VOICES) -> InputSet:
    """The built-in synthetic voices (no recordings needed; not real speech: say so)."""
    from runtime.demo_signal import demo_voice
    from runtime.fbank import log_mel, normalise
    from runtime.vad import remove_silence

    utterances = []
    for seed in range(count):
        speech = remove_silence(demo_voice(6.0, seed=seed))
        utterances.append(Utterance(f"demo voice seed {seed}", normalise(log_mel(speech)), speech.astype(np.float32)))
    return InputSet(f"built-in synthetic voices ({count} x 6 s, not real speech)", utterances)


def load(audio: Path | None = None, fbanks: Path | None = None,
         progress: Callable[[str], None] = lambda m: None) -> InputSet:
    """``--audio DIR`` or ``--fbanks DIR`` (not both); neither: the built-in voices."""
    if audio is not None and fbanks is not None:
        raise InputError("give --audio or --fbanks, not both")
    if audio is not None:
        return from_audio(audio, progress)
    if fbanks is not None:
        return from_fbanks(fbanks)
    return builtin_voices()


def select(inputs: InputSet, limit: int | None) -> InputSet:
    """At most ``limit`` utterances, chosen deterministically: ordered by a hash of their
    content (not their names, so renaming files changes nothing), then spread evenly over
    that order so long and short utterances are both represented."""
    if limit is not None and limit < 1:
        raise InputError(f"the selection needs at least 1 utterance, got {limit}")
    if limit is None or len(inputs) <= limit:
        return inputs
    keyed = sorted(inputs.utterances, key=lambda u: hashlib.sha256(u.fbank.tobytes()).hexdigest())
    by_length = sorted(keyed, key=lambda u: u.fbank.shape[0])  # stable: ties keep the hash order
    picks = np.linspace(0, len(by_length) - 1, limit).round().astype(int)
    return InputSet(f"{inputs.source}, {limit} selected", [by_length[i] for i in sorted(set(picks))])
