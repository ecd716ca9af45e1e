"""A deterministic synthetic "voice" for zero-setup demos and tests (no recording needed).

:func:`demo_voice` synthesises a voiced, speech-like signal at 16 kHz: a glottal-pulse-like
harmonic source (spectral tilt about -6 dB/octave) whose pitch glides between about 100
and 220 Hz, shaped by three formant resonances that move from vowel to vowel, cut into
syllables (raised-cosine envelopes, 110-260 ms) grouped into words with short gaps and
longer pauses between phrases, plus a little breath noise and a faint noise floor.
webrtcvad (aggressiveness 2) takes it for speech: silence removal keeps most of it and drops
the pauses. It is not a human voice: a face predicted from it means nothing.
"""
from __future__ import annotations

import numpy as np

from runtime.audio import SAMPLE_RATE

__all__ = ["demo_voice"]

# (F1, F2, F3) in Hz of a few vowels (adult male averages, rounded).
_VOWELS = np.array([
    [730.0, 1090.0, 2440.0],  # a
    [530.0, 1840.0, 2480.0],  # e
    [270.0, 2290.0, 3010.0],  # i
    [570.0, 840.0, 2410.0],   # o
    [300.0, 870.0, 2240.0],   # u
    [660.0, 1720.0, 2410.0],  # ae
])
_BANDWIDTHS = np.array([90.0, 120.0, 180.0])
_GAINS = np.array([1.0, 0.6, 0.3])


def _plan(seconds: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(start, duration) in seconds of every syllable."""
    syllables = []
    t = 0.15 + 0.1 * rng.random()
    while True:
        for _word in range(int(rng.integers(2, 5))):  # words per phrase
            for _syl in range(int(rng.integers(1, 4))):  # syllables per word
                dur = 0.11 + 0.15 * rng.random()
                if t + dur > seconds - 0.1:
                    return syllables
                syllables.append((t, dur))
                t += dur + 0.01 + 0.03 * rng.random()
            t += 0.04 + 0.06 * rng.random()  # gap between words
        t += 0.22 + 0.2 * rng.random()  # pause between phrases


def demo_voice(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """``seconds`` of synthetic voiced speech at 16 kHz as a 1-D int16 array (deterministic)."""
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE

    # Pitch: a slow glide within ~100-220 Hz, a little vibrato, per-seed phase.
    phase0 = 2 * np.pi * rng.random(2)
    f0 = 160.0 + 52.0 * np.sin(2 * np.pi * 0.31 * t + phase0[0]) + 6.0 * np.sin(2 * np.pi * 5.1 * t + phase0[1])
    f0 = np.clip(f0, 100.0, 220.0)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE

    # Amplitude envelope and formant trajectory, syllable by syllable.
    env = np.zeros(n)
    formants = np.tile(_VOWELS[0], (n, 1))
    syllables = _plan(seconds, rng)
    vowel_ids = rng.integers(0, len(_VOWELS), size=len(syllables) + 1)
    for i, (start, dur) in enumerate(syllables):
        a, b = int(start * SAMPLE_RATE), min(n, int((start + dur) * SAMPLE_RATE))
        m = b - a
        if m <= 1:
            continue
        u = np.linspace(0.0, 1.0, m)
        shape = np.sin(np.pi * u) ** 0.6  # quick rise, flat top, quick fall
        env[a:b] = np.maximum(env[a:b], (0.7 + 0.3 * rng.random()) * shape)
        v0, v1 = _VOWELS[vowel_ids[i]], _VOWELS[vowel_ids[i + 1]]
        w = np.clip((u - 0.3) / 0.7, 0.0, 1.0)[:, None]  # glide towards the next vowel
        formants[a:b] = (1 - w) * v0 + w * v1
        formants[b:] = v1

    # Harmonic source shaped by the formants (additive synthesis). Gains vary slowly: they
    # are evaluated every 5 ms and interpolated linearly.
    coarse = np.arange(0, n, 80)
    f0c, fc = f0[coarse], formants[coarse]
    harmonics = np.arange(1, 72)[:, None]
    fh = harmonics * f0c  # (H, m)
    gain = np.full(fh.shape, 0.02)  # spectral floor between formants
    for k in range(3):
        gain += _GAINS[k] / (1.0 + ((fh - fc[:, k]) / (0.5 * _BANDWIDTHS[k])) ** 2)
    gain *= np.clip((7200.0 - fh) / 400.0, 0.0, 1.0) / harmonics  # source tilt, band limit
    voiced = np.zeros(n)
    for h in range(gain.shape[0]):
        voiced += np.interp(t, t[coarse], gain[h]) * np.sin((h + 1) * phase + 0.3 * (h + 1))
    voiced *= env

    breath = rng.normal(0.0, 1.0, n)
    breath = np.diff(breath, prepend=0.0) * 0.03 * env  # high-passed, only while voicing
    floor = rng.normal(0.0, 0.002, n)
    x = voiced + breath
    x *= 0.5 / max(np.abs(x).max(), 1e-9)  # peak at half full scale
    x += floor
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)
