"""The release's voice frontend: Sphinx-style 64-filter log-mel "fbank", vectorised.

Reproduces, number for number, what the Cross-Modal Perceptionist release writes as its
preprocessed ``.npy`` features (docs: ORIGINAL.md section 1):

    compute_fbank(int16 samples) = normalise(log_mel(remove_silence(samples)))

Everything is numpy; there is no per-frame Python loop: full frames are one strided view
of the signal, processed in blocks of 128 frames with per-thread work buffers that are
reused between calls; the (at most 3) short tail frames are handled on their own. The
result is bit-identical to a per-frame implementation of the spec on the real recordings.
The release's quirks are kept on purpose (they are the contract):

* frame count ``int(len/160 + 1)``, frame ``k`` = samples ``[160k, 160k+400)``; a short
  tail frame is filled by cyclic repetition of its own samples (``numpy.resize``), an
  empty frame is 400 zeros, so the last frame is always short or empty;
* pre-emphasis is per frame and stateful: the first sample of frame ``k`` is
  pre-emphasised against the *last sample of frame k-1 after its fill* (0 for frame 0),
  not against the sample that precedes it in the signal;
* symmetric Hamming(400), real FFT with n=1024, power, 64 triangular mel filters
  (20-7200 Hz, Sphinx construction with Python's round-half-even bin edges),
  ``log(max(x, 1e-5))``; float64 arithmetic on the int16 values, float32 result;
* per-filter mean/std normalisation in float32, then tiling to at least 1000 frames.

"No signal" is refused (:class:`runtime.errors.InputError`, one message for every case):
constant samples (digital silence, a DC level), or a mel filter whose log-mel standard
deviation over frames is below ``MIN_SPREAD`` = 0.01 (its energy steady to about 1 %, e.g.
a steady tone). The normalisation divides by that deviation: below it the features are
float32 rounding noise magnified (digital silence gives 88.0 here and 0.988 in the ONNX
frontend), so the two frontends, and any two machines, would disagree. Both frontends decide
with this module's code (:func:`normalise` and :func:`check_signal`). Real speech is far from
it: the 7 VoxCeleb recordings' smallest per-filter deviation is 1.07, with or without VAD.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .audio import DEFAULT_MAX_BYTES, SAMPLE_RATE, load_audio
from .errors import InputError

# Parameters used everywhere in the release (and SAMPLE_RATE, 16 kHz: runtime.audio).
N_FILTERS = 64
LOWER_HZ = 20.0
UPPER_HZ = 7200.0
HOP = 160  # 100 frames per second
WIN = int(0.025 * SAMPLE_RATE)  # 400 samples
N_FFT = 1024
N_BINS = N_FFT // 2 + 1  # 513
PRE_EMPHASIS = 0.97
LOG_FLOOR = 1e-5
MIN_FRAMES = 1000  # utterances shorter than this are tiled (10 s)
# Smallest per-filter log-mel standard deviation over frames (natural log units) that counts as
# signal. The ONNX frontend's float32 log-mel agrees with ours to ~1e-5; divided by 0.01 that
# stays ~1e-3 in the features, while real recordings have >= 1.07 (100 x above).
MIN_SPREAD = 0.01
EPS32 = np.finfo(np.float32).eps

__all__ = [
    "SAMPLE_RATE", "N_FILTERS", "HOP", "WIN", "N_FFT", "MIN_FRAMES",
    "MIN_SPREAD", "mel_filterbank", "num_frames", "log_mel", "normalise", "compute_fbank",
    "fbank_from_source", "check_signal",
]


def _mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_inv(m):
    return 700.0 * (np.power(10.0, m / 2595.0) - 1.0)


_FILTERBANK: np.ndarray | None = None


def _filterbank() -> np.ndarray:
    """The cached, read-only filterbank (see :func:`mel_filterbank`)."""
    global _FILTERBANK
    if _FILTERBANK is None:
        dfreq = SAMPLE_RATE / N_FFT  # 15.625 Hz per bin
        melmin, melmax = _mel(LOWER_HZ), _mel(UPPER_HZ)
        dmelbw = (melmax - melmin) / (N_FILTERS + 1)
        edges_hz = _mel_inv(melmin + dmelbw * np.arange(N_FILTERS + 2, dtype=np.float64))
        # Python's round() on a Python float: round half to even, exactly like the release.
        edges = [int(round(float(e) / dfreq)) for e in edges_hz]
        fb = np.zeros((N_BINS, N_FILTERS), dtype=np.float64)
        for j in range(N_FILTERS):  # 64 filters, once per process
            left, center, right = edges[j], edges[j + 1], edges[j + 2]
            height = 2.0 / ((right - left) * dfreq)
            if center > left:
                rise = np.arange(left + 1, center)
                fb[rise, j] = (rise - left) * height / (center - left)
                fb[center, j] = height
            fall = np.arange(center + 1, right)
            if center != right:
                fb[fall, j] = (fall - right) * height / (center - right)
        fb.setflags(write=False)
        _FILTERBANK = fb
    return _FILTERBANK


def mel_filterbank() -> np.ndarray:
    """The release's (513, 64) float64 triangular mel filterbank (Sphinx construction).

    66 edges equally spaced in mel between mel(20 Hz) and mel(7200 Hz); each edge goes to
    the FFT bin ``int(round(edge_hz / 15.625))`` (Python round: half to even). Filter j
    rises over bins strictly between edge j and edge j+1, takes ``height`` on the center
    bin (only when center > left, i.e. when the rising loop ends on it), and falls over
    bins strictly between edge j+1 and edge j+2; ``height = 2 / ((right-left) * 15.625)``.
    """
    return _filterbank().copy()


def num_frames(n_samples: int) -> int:
    """Number of analysis frames for ``n_samples`` samples: ``int(n/160 + 1)``."""
    return int(n_samples / HOP + 1)


_HAMMING = np.hamming(WIN)
_BLOCK = 128  # frames per block in log_mel
_RFFT_HAS_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"
_LOCAL = threading.local()


class _Workspace:
    """Per-thread buffers for one block of frames, reused from call to call (fresh large
    temporaries on every call cost more in page faults than the arithmetic)."""

    def __init__(self, b: int) -> None:
        self.y = np.empty((b, WIN))
        self.spec = np.empty((b, N_BINS), dtype=np.complex128)
        self.power = np.empty((b, N_BINS))
        self.im2 = np.empty((b, N_BINS))
        self.mel = np.empty((b, N_FILTERS))


def _workspace() -> _Workspace:
    ws = getattr(_LOCAL, "ws", None)
    if ws is None:
        ws = _LOCAL.ws = _Workspace(_BLOCK)
    return ws


def _tail_frames(x: np.ndarray, n_full: int, t: int) -> np.ndarray:
    """Frames n_full..t-1 (those with fewer than 400 samples; at most ceil(400/160) = 3),
    as (rows, 401) float64: column 0 = the pre-emphasis prior, then the filled frame.

    The release fills a short frame by cyclic repetition of its own samples
    (``numpy.resize``); an empty frame is 400 zeros. The prior of a frame is the last
    sample of the previous frame after its fill; 0 for frame 0.
    """
    out = np.empty((t - n_full, WIN + 1))
    for i, k in enumerate(range(n_full, t)):
        seg = x[HOP * k:HOP * k + WIN]
        out[i, 1:] = np.resize(seg, WIN) if seg.size else 0.0
    out[0, 0] = x[HOP * (n_full - 1) + WIN - 1] if n_full else 0.0
    out[1:, 0] = out[:-1, WIN]
    return out


def _spectrum_block(y: np.ndarray, out: np.ndarray, ws: _Workspace) -> None:
    """Pre-emphasised frames ``y`` (n, 400), modified in place -> log mel energies in ``out``."""
    n = y.shape[0]
    y *= _HAMMING
    if _RFFT_HAS_OUT:
        sp = np.fft.rfft(y, n=N_FFT, axis=1, out=ws.spec[:n])
    else:  # numpy < 2
        sp = ws.spec[:n]
        sp[...] = np.fft.rfft(y, n=N_FFT, axis=1)
    power = ws.power[:n]
    np.square(sp.real, out=power)
    im2 = ws.im2[:n]
    np.square(sp.imag, out=im2)
    power += im2
    mel = ws.mel[:n]
    np.matmul(power, _filterbank(), out=mel)
    np.maximum(mel, LOG_FLOOR, out=mel)
    np.log(mel, out=mel)
    out[...] = mel  # cast to float32


def log_mel(samples) -> np.ndarray:
    """Raw log mel filterbank energies, ``(T, 64)`` float32, ``T = int(len/160 + 1)``.

    ``samples``: 1-D int16 values (any real dtype is accepted and used as is, in float64;
    the release works on the int16 values, not on [-1, 1] floats).
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InputError(f"log_mel expects a 1-D array of samples, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"log_mel expects integer or float samples, got dtype {x.dtype}")
    if x.dtype not in (np.int16, np.float64):  # int16 is read as is: exact in float64
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    n = x.shape[0]
    t = num_frames(n)
    out = np.empty((t, N_FILTERS), dtype=np.float32)
    ws = _workspace()
    # Full frames (160k + 400 <= n), block by block from one strided view of the signal.
    # Frame k >= 1 is pre-emphasised against the previous frame's last sample, which is
    # its own sample 239; frame 0 against 0.
    n_full = 0 if n < WIN else (n - WIN) // HOP + 1
    if n_full:
        frames = np.lib.stride_tricks.as_strided(
            x, shape=(n_full, WIN), strides=(HOP * x.strides[0], x.strides[0]), writeable=False)
        for s in range(0, n_full, _BLOCK):
            e = min(n_full, s + _BLOCK)
            f = frames[s:e]
            y = ws.y[:e - s]
            # y[i] = x[i] - 0.97 * x[i-1] (float64), y[0] = x[0] - 0.97 * prior
            np.multiply(f[:, :-1], -PRE_EMPHASIS, out=y[:, 1:])
            y[:, 1:] += f[:, 1:]
            if s:
                np.multiply(frames[s - 1:e - 1, WIN - 1], -PRE_EMPHASIS, out=y[:, 0])
            else:
                y[0, 0] = 0.0
                np.multiply(frames[:e - 1, WIN - 1], -PRE_EMPHASIS, out=y[1:, 0])
            y[:, 0] += f[:, 0]
            _spectrum_block(y, out[s:e], ws)
    # Short tail frames (cyclic fill; their priors follow the fill).
    g = _tail_frames(x, n_full, t)
    y = g[:, 1:] - PRE_EMPHASIS * g[:, :-1]
    _spectrum_block(y, out[n_full:], ws)
    return out


def _no_signal(why: str) -> InputError:
    return InputError(
        f"no signal in the audio: {why}; features are normalised per mel filter by its spread "
        f"over time, so every filter's log-mel must vary (standard deviation over frames at "
        f"least {MIN_SPREAD}): digital silence, a constant (DC) level or a steady tone carry no voice")


def _check_not_constant(x: np.ndarray) -> None:
    if x.size and x.min() == x.max():
        raise _no_signal(f"all {x.size} samples are {x.flat[0]}")


def _check_spread(logmel: np.ndarray) -> None:
    std = logmel.astype(np.float64).std(axis=0)
    j = int(std.argmin())
    if std[j] < MIN_SPREAD:
        raise _no_signal(f"mel filter {j} has a log-mel standard deviation of {std[j]:.2g} "
                         f"over {logmel.shape[0]} frame(s)")


def normalise(logmel, strict: bool = True) -> np.ndarray:
    """The release's ``get_fbank`` normalisation: ``(T, 64)`` float32 -> ``(max(T,1000), 64)``.

    Subtract the per-filter mean over time, divide by (the per-filter population std of the
    centred features + float32 eps), statistics in float32 with numpy's own ``mean``/``std``
    (as the release does). If ``T < 1000`` the utterance is repeated along time and exactly
    the first 1000 frames are kept; ``T >= 1000`` is left as is (no crop).
    A filter whose standard deviation is below ``MIN_SPREAD`` raises InputError ("no signal",
    see the module docstring); ``strict=False`` skips that check (the release's numbers,
    rounding noise included).
    """
    f = np.asarray(logmel)
    if f.ndim != 2 or f.shape[1] != N_FILTERS or f.shape[0] < 1:
        raise InputError(f"normalise expects a (T, {N_FILTERS}) array with T >= 1, got shape {f.shape}")
    f = f.astype(np.float32, copy=False)
    if strict:
        _check_spread(f)
    f = f - f.mean(axis=0)
    f = f / (f.std(axis=0) + EPS32)
    t = f.shape[0]
    if t < MIN_FRAMES:
        f = np.tile(f, (math.ceil(MIN_FRAMES / t), 1))[:MIN_FRAMES]
    return np.ascontiguousarray(f, dtype=np.float32)


def check_signal(samples) -> None:
    """Raise the "no signal" InputError exactly when :func:`compute_fbank` (``vad=False``) of
    these samples would: for callers of the ONNX frontend, which computes the fbank in-graph.

    Cheap for real audio: any two frames whose log-mel differs by ``d`` in a filter prove that
    its standard deviation over all ``T`` frames is at least ``d / sqrt(2 T)``. The log-mel of
    up to 32 frames spread over the signal usually proves every filter above ``2 x MIN_SPREAD``
    (the factor 2 absorbs float32 rounding); otherwise the whole log-mel is computed and
    checked as :func:`normalise` does.
    """
    x = np.asarray(samples)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"check_signal expects a non-empty 1-D array of samples, got shape {x.shape}")
    _check_not_constant(x)
    n = x.shape[0]
    n_full = 0 if n < WIN else (n - WIN) // HOP + 1
    if n_full >= 3:
        ks = np.unique(np.linspace(1, n_full - 1, min(32, n_full - 1)).astype(np.int64))
        starts = HOP * ks
        # frame k >= 1: samples [160k, 160k + 400), pre-emphasis prior = sample 160k + 239
        g = np.empty((len(ks), WIN + 1))
        g[:, 0] = x[starts + WIN - HOP - 1]
        g[:, 1:] = x[starts[:, None] + np.arange(WIN)]
        y = g[:, 1:] - PRE_EMPHASIS * g[:, :-1]
        some = np.empty((len(ks), N_FILTERS), dtype=np.float32)
        _spectrum_block(y, some, _workspace())
        span = some.max(axis=0).astype(np.float64) - some.min(axis=0)
        if (span >= 2 * MIN_SPREAD * math.sqrt(2 * num_frames(n))).all():
            return
    _check_spread(log_mel(x))


def compute_fbank(samples_int16, vad: bool = True) -> np.ndarray:
    """The release's preprocessing of one utterance: ``(T, 64)`` float32, ``T >= 1000``.

    ``samples_int16``: mono 16 kHz int16 samples. With ``vad`` (the release's behaviour),
    silence is removed first with webrtcvad (:func:`runtime.vad.remove_silence`, raises
    :class:`runtime.errors.NoSpeechError` when nothing is kept). Audio without signal (see
    the module docstring) raises :class:`runtime.errors.InputError`.
    """
    x = np.asarray(samples_int16)
    if x.dtype != np.int16 or x.ndim != 1:
        raise InputError(
            f"compute_fbank expects 1-D int16 samples at 16 kHz, got dtype {x.dtype}, shape {x.shape}"
            " (use runtime.audio.load_audio to convert)")
    if vad:
        from .vad import remove_silence
        x = remove_silence(x)
    _check_not_constant(x)
    return normalise(log_mel(x))


def fbank_from_source(source, sample_rate=None, vad: bool = True,
                      max_bytes: int | None = DEFAULT_MAX_BYTES, limit_names: dict[str, str] | None = None) -> np.ndarray:
    """:func:`runtime.audio.load_audio` (file path or array) then :func:`compute_fbank`.
    ``max_bytes`` bounds files as in :func:`runtime.audio.load_audio`; ``limit_names`` names it in
    messages."""
    samples = load_audio(source, sample_rate, max_bytes=max_bytes, limit_names=limit_names)
    return compute_fbank(samples, vad=vad)
