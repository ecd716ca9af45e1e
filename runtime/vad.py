"""Silence removal exactly as the release does it (webrtcvad, aggressiveness 2).

The release runs py-webrtcvad's example collector (ORIGINAL.md 1a). webrtcvad keeps
state between ``is_speech`` calls, so its answers depend on the exact sequence of calls;
this module makes the same calls in the same order, with one fresh detector per
utterance:

* 20 ms frames (320 samples), produced while ``offset + frame_bytes < total_bytes``
  (strict: a frame ending exactly at the end of the data is dropped, as is a partial tail);
* a ring of ``int(padding_ms / frame_ms)`` = 2 frames. Not triggered: append the frame,
  ask ``is_speech`` for every ring frame (oldest first), trigger when more than 0.9 x ring
  size answered speech (the ring's frames start the segment). Triggered: append the frame
  to the segment and the ring, ask ``is_speech`` for every ring frame, emit the segment
  when more than 0.9 x ring size answered non-speech;
* at the end, what is left of the segment is emitted; the output is all emitted frames
  concatenated.

No temporary files are written (the release wrote and deleted a ``tmp/`` folder).
"""
from __future__ import annotations

from collections import deque

import numpy as np

from .audio import SAMPLE_RATE
from .errors import InputError, NoSpeechError

__all__ = ["remove_silence"]


def _new_detector(mode: int):
    """A fresh webrtcvad detector in ``mode``; returns ``is_speech(frame_bytes) -> bool``.

    Both PyPI distributions (``webrtcvad`` 2.0.10, ``webrtcvad-wheels``) ship the C
    extension ``_webrtcvad``; their thin ``webrtcvad.Vad`` wrapper only calls
    ``_webrtcvad.process(handle, rate, buf, len(buf) // 2)``. We call the extension the same
    way, directly: webrtcvad 2.0.10's wrapper imports ``pkg_resources``, which recent
    setuptools no longer ships, so ``import webrtcvad`` fails there. The public wrapper is
    the fallback.
    """
    try:
        import _webrtcvad
    except ImportError:
        _webrtcvad = None
    if _webrtcvad is not None:
        handle = _webrtcvad.create()
        _webrtcvad.init(handle)
        _webrtcvad.set_mode(handle, mode)
        process = _webrtcvad.process

        def is_speech(buf: bytes) -> bool:
            return process(handle, SAMPLE_RATE, buf, len(buf) // 2)
        return is_speech
    try:
        import webrtcvad
    except ImportError as exc:
        raise ImportError(
            "silence removal needs webrtcvad: pip install webrtcvad (or webrtcvad-wheels); "
            f"import failed: {exc}") from exc
    vad = webrtcvad.Vad(mode)
    return lambda buf: vad.is_speech(buf, SAMPLE_RATE)


def remove_silence(samples_int16, aggressiveness: int = 2, frame_ms: int = 20,
                   padding_ms: int = 50) -> np.ndarray:
    """Keep the voiced segments of mono 16 kHz int16 ``samples_int16`` (int16, 1-D).

    Returns the concatenated voiced frames (a multiple of ``frame_ms`` worth of samples).
    Raises :class:`runtime.errors.NoSpeechError` when nothing is kept (including input too
    short to hold one frame).
    """
    x = np.asarray(samples_int16)
    if x.dtype != np.int16 or x.ndim != 1:
        raise InputError(
            f"remove_silence expects 1-D int16 samples at 16 kHz, got dtype {x.dtype}, shape {x.shape}")
    if aggressiveness not in (0, 1, 2, 3):
        raise InputError(f"VAD aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
    if frame_ms not in (10, 20, 30):
        raise InputError(f"VAD frame length must be 10, 20 or 30 ms, got {frame_ms!r}")
    ring_size = int(padding_ms / frame_ms)
    if ring_size < 1:
        raise InputError(f"VAD padding ({padding_ms} ms) must be at least one frame ({frame_ms} ms)")

    n = int(SAMPLE_RATE * frame_ms / 1000)  # samples per frame
    pcm = x.astype("<i2", copy=False).tobytes()
    frame_bytes = 2 * n
    # Frames at offsets k*frame_bytes with offset + frame_bytes < len (strict, as the release).
    n_frames = max(0, (len(pcm) - 1) // frame_bytes)
    seconds = x.size / SAMPLE_RATE
    if n_frames == 0:
        raise NoSpeechError(
            f"no speech found: the recording is too short for voice activity detection "
            f"({x.size} samples = {1000 * seconds:.1f} ms; more than {n} samples = {frame_ms} ms "
            "are needed)")

    frames = [pcm[i * frame_bytes:(i + 1) * frame_bytes] for i in range(n_frames)]
    # A fresh detector per utterance: its answers depend on its whole call history.
    is_speech = _new_detector(aggressiveness)
    threshold = 0.9 * ring_size
    ring: deque[int] = deque(maxlen=ring_size)
    triggered = False
    segment: list[int] = []
    kept: list[int] = []  # indices of emitted frames, in order
    for i in range(n_frames):
        if not triggered:
            ring.append(i)
            voiced = sum(1 for j in ring if is_speech(frames[j]))
            if voiced > threshold:
                triggered = True
                segment.extend(ring)
                ring.clear()
        else:
            segment.append(i)
            ring.append(i)
            unvoiced = sum(1 for j in ring if not is_speech(frames[j]))
            if unvoiced > threshold:
                triggered = False
                kept.extend(segment)
                segment = []
                ring.clear()
    kept.extend(segment)

    if not kept:
        raise NoSpeechError(
            f"no speech found in {seconds:.2f} s of audio by voice activity detection "
            f"(webrtcvad, aggressiveness {aggressiveness}); if the recording does contain "
            "speech, skip silence removal (vad=False; --no-vad on the command line)")
    idx = np.asarray(kept, dtype=np.intp)
    return np.ascontiguousarray(x[:n_frames * n].reshape(n_frames, n)[idx].reshape(-1), dtype=np.int16)
