"""Live capture from the default input device (``cmp-face predict --mic`` / ``analyze --mic``).

Uses ``sounddevice`` (the optional ``mic`` extra; its wheels bundle PortAudio on Windows and
macOS, Linux needs the system's ``libportaudio2``), imported only when recording, so nothing
else in the package needs it. Every failure is a one-line :class:`runtime.errors.CmpError`.
"""
from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from runtime.errors import CmpError, InputError

__all__ = ["MAX_SECONDS", "MIN_SECONDS", "check_seconds", "record"]

#: Shortest recording: the voice activity detector and the encoder need some speech.
MIN_SECONDS = 0.5
#: Longest recording: bounds memory (60 s of 16 kHz int16 is under 2 MB) and a forgotten run.
MAX_SECONDS = 60.0

MISSING_EXTRA = "recording needs the mic extra: pip install 'cmp-deploy[mic]'"


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except ImportError as exc:
        raise CmpError(MISSING_EXTRA) from exc
    except OSError as exc:  # sounddevice raises OSError when the PortAudio library is absent
        raise CmpError(f"recording needs the PortAudio library, which was not found ({exc}); "
                       "on Debian/Ubuntu: apt install libportaudio2") from exc
    return sounddevice


def check_seconds(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) \
            or not math.isfinite(seconds) or not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InputError(f"recording length: expected {MIN_SECONDS:g} to {MAX_SECONDS:g} seconds, got {seconds!r}")
    return float(seconds)


def record(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Record ``seconds`` of mono audio from the default input device; returns int16 ``(n,)``
    with ``n = round(seconds * sample_rate)``. Blocks until the recording is complete."""
    seconds = check_seconds(seconds)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not 8000 <= sample_rate <= 192000:
        raise InputError(f"sample rate: expected an integer from 8000 to 192000 Hz, got {sample_rate!r}")
    sd = _sounddevice()
    try:
        device = sd.query_devices(kind="input")
        if int(device.get("max_input_channels", 0)) < 1:
            raise ValueError("the default device has no input channels")
        sd.check_input_settings(channels=1, dtype="int16", samplerate=sample_rate)
    except (sd.PortAudioError, ValueError) as exc:
        raise CmpError(f"no usable microphone: the default input device cannot record 16-bit mono at "
                       f"{sample_rate} Hz ({exc})") from exc
    frames = int(round(seconds * sample_rate))
    try:
        data = sd.rec(frames, samplerate=sample_rate, channels=1, dtype="int16")
        sd.wait()
    except sd.PortAudioError as exc:
        raise CmpError(f"recording failed: {exc}") from exc
    data = np.asarray(data)
    if data.dtype != np.int16 or data.size != frames:
        raise CmpError(f"recording failed: the device returned {data.dtype} {data.shape}, "
                       f"expected {frames} int16 samples")
    return np.ascontiguousarray(data.reshape(-1))
