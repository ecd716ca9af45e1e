"""runtime.vad against a plain re-implementation of the release's collector (ORIGINAL.md 1a)."""
from __future__ import annotations

import re
import wave
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import InputError, NoSpeechError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WAVS = sorted((DATA / "voxceleb_wav").glob("*.wav"))
needs_wavs = pytest.mark.skipif(not WAVS, reason=f"real recordings not found in {DATA / 'voxceleb_wav'}")


def _detector_factory():
    try:
        import webrtcvad
        return lambda mode: webrtcvad.Vad(mode).is_speech
    except ImportError:  # webrtcvad 2.0.10's wrapper needs pkg_resources (gone from new setuptools)
        pass
    try:
        import _webrtcvad
    except ImportError:
        return None

    def make(mode):
        handle = _webrtcvad.create()
        _webrtcvad.init(handle)
        _webrtcvad.set_mode(handle, mode)
        return lambda buf, rate: _webrtcvad.process(handle, rate, buf, len(buf) // 2)
    return make


MAKE_DETECTOR = _detector_factory()
pytestmark = pytest.mark.skipif(MAKE_DETECTOR is None, reason="webrtcvad is not installed")


def reference_remove_silence(samples: np.ndarray, mode=2, frame_ms=20, padding_ms=50) -> np.ndarray:
    """The release's pipeline, written plainly: byte frames, a deque ring, the same calls."""
    rate = 16000
    audio = samples.astype("<i2").tobytes()
    n = int(rate * (frame_ms / 1000.0) * 2)
    frames = []
    offset = 0
    while offset + n < len(audio):
        frames.append(audio[offset:offset + n])
        offset += n
    is_speech = MAKE_DETECTOR(mode)
    ring = deque(maxlen=int(padding_ms / frame_ms))
    triggered = False
    voiced = []
    segments = []
    for frame in frames:
        if not triggered:
            ring.append(frame)
            num_voiced = len([f for f in ring if is_speech(f, rate)])
            if num_voiced > 0.9 * ring.maxlen:
                triggered = True
                voiced.extend(ring)
                ring.clear()
        else:
            voiced.append(frame)
            ring.append(frame)
            num_unvoiced = len([f for f in ring if not is_speech(f, rate)])
            if num_unvoiced > 0.9 * ring.maxlen:
                triggered = False
                segments.append(b"".join(voiced))
                ring.clear()
                voiced = []
    if voiced:
        segments.append(b"".join(voiced))
    return np.frombuffer(b"".join(segments), dtype="<i2").astype(np.int16)


def read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


@needs_wavs
@pytest.mark.parametrize("path", WAVS, ids=lambda p: p.stem)
def test_real_recordings_identical_to_reference(path):
    from runtime.vad import remove_silence

    x = read_wav(path)
    got = remove_silence(x)
    ref = reference_remove_silence(x)
    assert got.dtype == np.int16 and len(got) % 320 == 0 and 0 < len(got) <= len(x)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(remove_silence(x), got)  # a fresh detector every call


@needs_wavs
@pytest.mark.parametrize("mode,frame_ms", [(0, 10), (1, 30), (3, 20), (2, 10)])
def test_other_settings_identical_to_reference(mode, frame_ms):
    from runtime.vad import remove_silence

    for path in WAVS[:3]:
        x = read_wav(path)
        np.testing.assert_array_equal(remove_silence(x, mode, frame_ms), reference_remove_silence(x, mode, frame_ms))


@needs_wavs
def test_reusing_one_detector_would_differ():
    """Why a fresh detector matters: the call history changes the answers."""
    x = read_wav(WAVS[0]).astype("<i2").tobytes()
    frames = [x[o:o + 640] for o in range(0, len(x) - 640, 640)]
    fresh = MAKE_DETECTOR(2)
    a = [fresh(f, 16000) for f in frames]
    warmed = MAKE_DETECTOR(2)
    for f in frames[::-1]:
        warmed(f, 16000)
    b = [warmed(f, 16000) for f in frames]
    assert a != b


def test_demo_voice_identical_and_mostly_kept():
    from runtime.demo_signal import demo_voice
    from runtime.vad import remove_silence

    for seed in (0, 1):
        x = demo_voice(6.0, seed)
        got = remove_silence(x)
        np.testing.assert_array_equal(got, reference_remove_silence(x))
        assert 0.6 * len(x) < len(got) < len(x)  # pauses dropped, syllables kept


@pytest.mark.parametrize("extra", [0, 1, 319])
def test_strict_framing(extra):
    """A frame ending exactly at the end of the data is dropped; so is a partial tail."""
    from runtime.demo_signal import demo_voice
    from runtime.vad import remove_silence

    x = demo_voice(2.0)[:320 * 90 + extra]
    got = remove_silence(x)
    np.testing.assert_array_equal(got, reference_remove_silence(x))
    assert len(got) <= 320 * (89 if extra == 0 else 90)


def test_silence_raises_no_speech():
    from runtime.vad import remove_silence

    with pytest.raises(NoSpeechError, match="^" + re.escape(
            "no speech found in 3.00 s of audio by voice activity detection (webrtcvad, aggressiveness 2); "
            "if the recording does contain speech, skip silence removal (vad=False; --no-vad on the command line)") + "$"):
        remove_silence(np.zeros(48000, np.int16))


@pytest.mark.parametrize("n", [0, 1, 320])
def test_too_short_for_one_frame(n):
    from runtime.vad import remove_silence

    with pytest.raises(NoSpeechError, match="^" + re.escape(
            f"no speech found: the recording is too short for voice activity detection ({n} samples = "
            f"{n / 16:.1f} ms; more than 320 samples = 20 ms are needed)") + "$"):
        remove_silence(np.zeros(n, np.int16))


def test_bad_arguments():
    from runtime.vad import remove_silence

    x = np.zeros(1000, np.int16)
    with pytest.raises(InputError, match=re.escape("remove_silence expects 1-D int16 samples at 16 kHz, got dtype float32")):
        remove_silence(x.astype(np.float32))
    with pytest.raises(InputError, match=re.escape("VAD aggressiveness must be 0, 1, 2 or 3, got 4")):
        remove_silence(x, aggressiveness=4)
    with pytest.raises(InputError, match=re.escape("VAD frame length must be 10, 20 or 30 ms, got 25")):
        remove_silence(x, frame_ms=25)
    with pytest.raises(InputError, match=re.escape("VAD padding (10 ms) must be at least one frame (20 ms)")):
        remove_silence(x, padding_ms=10)
