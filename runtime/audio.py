"""Reading audio: any WAV / FLAC / OGG / MP3 file or numpy array -> mono 16 kHz int16.

The release works on mono 16 kHz signed 16-bit samples (their int16 *values*, not
[-1, 1] floats); :func:`load_audio` produces exactly that from whatever it is given.

Conversion rules (``int16-scale`` = the value a sample would have as int16):

* every source sample is first mapped to a float64 int16-scale value:
  int16 ``x -> x``; unsigned 8-bit ``x -> (x - 128) * 256``; signed 8-bit ``x -> x * 256``;
  24-bit ``x -> x / 256``; 32-bit int ``x -> x / 65536``; float ``x -> x * 32768``
  (the usual convention int16 -> float = x / 32768, so int16 -> float -> int16 is exact);
* several channels are averaged (arithmetic mean, float64);
* a rate other than 16 kHz is resampled with soxr (quality "HQ") in float64;
* finally the values are rounded to the nearest integer (ties to even, ``numpy.rint``)
  and clipped to [-32768, 32767].

Consequences: mono 16-bit 16 kHz input passes through bit-exact, and so do 8-bit audio
and float audio that holds exact multiples of 1/32768; 24/32-bit PCM is *rounded* to
16 bits (not truncated by a shift: that would bias the signal by -0.5 LSB); float samples
beyond [-1, 1) are clipped.

WAV files (RIFF little-endian and RIFX big-endian) are parsed by our own reader:
PCM 8 (unsigned) / 16 / 24 / 32-bit, IEEE float 32 / 64-bit, WAVE_FORMAT_EXTENSIBLE with
those subformats, any channel count; unknown chunks are skipped (with RIFF's odd-size
padding byte). Other containers go through ``soundfile`` (libsndfile). Every problem is
raised as :class:`runtime.errors.InputError` with a specific message. A file that is usable
but not what its header says (a WAV whose 'data' chunk is shorter than declared) gives an
:class:`runtime.errors.InputWarning` (:func:`load_audio_with_warnings` returns the messages
instead, for callers that record them).

Memory is bounded by ``max_bytes`` whatever a file claims. A file larger than that is refused
before it is read. The decoded audio is also counted as 16-bit PCM (its WAV size), at the larger
of the source (frames x channels) and the 16 kHz mono result (frames x 16000 / rate: a low-rate
file grows when resampled): a header that declares more is refused before decoding, and
compressed files (libsndfile) are decoded block by block with the count kept while decoding, so
one whose header hides its length (a FLAC with "total samples 0") is stopped as soon as it
passes the budget. ``max_seconds`` (optional) limits the duration the same way: checked on the
header or the array's length, and while decoding, always before any resampling. Each float64
array held is then at most 4 x ``max_bytes`` (8 bytes per 16-bit sample): a file refused while
decoding has taken about 4 x ``max_bytes`` (+ an 8 MiB block), an accepted one peaks at about
5 x (16 kHz) to 7 x (a low rate, while resampling) ``max_bytes`` (tests/test_audio.py loads
such bombs under an address-space limit). Messages name the
limit that was passed (``max_bytes`` / ``max_seconds``, or what ``limit_names`` maps them to,
e.g. ``{"max_bytes": "--max-bytes"}`` for a command line).
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
from fractions import Fraction
from typing import Mapping

import numpy as np

from .errors import InputError, InputWarning, LimitError

SAMPLE_RATE = 16000  # what the release works at: every input is resampled to it
MIN_RATE = 4000  # below / above these the header (or the caller) is wrong
MAX_RATE = 384000
DEFAULT_MAX_BYTES = 200 * 1024 * 1024  # 200 MiB (about 100 min of 16 kHz stereo 16-bit)

__all__ = ["load_audio", "load_audio_with_warnings", "read_limited", "SAMPLE_RATE", "MIN_RATE", "MAX_RATE", "DEFAULT_MAX_BYTES"]

STREAMING_DATA_SIZE = 0xFFFFFFFF  # a streaming writer's 'data' size placeholder: length unknown
PCM16_BYTES = 2  # the size limit counts decoded audio as 16-bit PCM (its WAV size)
_UNKNOWN_FRAMES = 1 << 62
_SOUNDFILE_BLOCK = 1 << 16  # frames per read: decoding stops at max_bytes whatever the header said
_SOUNDFILE_BLOCK_VALUES = 1 << 20  # at most this many samples (all channels) per read: 8 MiB of float64
_FIRST_BUFFER_FRAMES = 1 << 22  # a declared length is trusted this far (32 MiB of float64), then doubled

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The KSDATAFORMAT_SUBTYPE_* GUIDs are <tag>-0000-0010-8000-00aa00389b71.
_GUID_DATA4 = b"\x80\x00\x00\xaa\x00\x38\x9b\x71"

_FORMAT_NAMES = {
    0x0000: "unknown",
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0016: "ITU G.723 ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "ITU G.721 ADPCM",
    0x0050: "MPEG",
    0x0055: "MPEG layer 3",
    0x0092: "Dolby AC3 SPDIF",
    0x00FF: "AAC",
    0x0161: "Windows Media Audio",
    0x2000: "Dolby AC3",
    0xF1AC: "FLAC",
}


def load_audio(source, sample_rate: float | None = None, *,
               max_bytes: int | None = DEFAULT_MAX_BYTES, max_seconds: float | None = None,
               limit_names: Mapping[str, str] | None = None, name: str = "<bytes>") -> np.ndarray:
    """Load audio as mono 16 kHz int16 samples (1-D ``numpy.int16`` array).

    ``source``: a file path (``str`` / ``os.PathLike``), the bytes of a file, or a numpy
    array of samples, 1-D (mono) or 2-D ``(samples, channels)``; for an array
    ``sample_rate`` (Hz) is required. Array dtypes: int16, int32 (full-scale 32-bit),
    uint8 (offset binary 8-bit), int8, or float (float16/32/64, full scale [-1, 1]), in
    either byte order.
    For files the header states the rate: ``sample_rate`` may be left out, and if given
    it must agree with the header.
    ``max_bytes``: refuse files (or bytes) larger than this, and files that declare or decode
    to more than this as 16-bit PCM (counted at the larger of the source's frames x channels
    and the 16 kHz mono result); compressed files are stopped while decoding as soon as they
    pass it; ``None``: no limit. Not applied to arrays (they are already in memory).
    ``max_seconds``: refuse audio longer than this many seconds (files: on the header, and
    while decoding; arrays: on their length), before resampling; ``None`` (default): no limit.
    ``limit_names``: how messages name the limits, e.g. ``{"max_bytes": "--max-bytes"}``
    (default: the parameter names). ``name``: what messages call a source given as bytes.
    Limits passed raise :class:`LimitError` (an :class:`InputError`); problems that still
    leave usable audio are reported with :class:`InputWarning`.
    """
    samples, notes = load_audio_with_warnings(source, sample_rate, max_bytes=max_bytes,
                                              max_seconds=max_seconds, limit_names=limit_names, name=name)
    for note in notes:
        warnings.warn(note, InputWarning, stacklevel=2)
    return samples


def load_audio_with_warnings(source, sample_rate: float | None = None, *,
                             max_bytes: int | None = DEFAULT_MAX_BYTES, max_seconds: float | None = None,
                             limit_names: Mapping[str, str] | None = None,
                             name: str = "<bytes>") -> tuple[np.ndarray, list[str]]:
    """:func:`load_audio` that returns its warnings' messages instead of emitting them. ``name``:
    what messages call a source given as bytes (a server: "the request body")."""
    notes: list[str] = []
    limits = _Limits(max_bytes, max_seconds, limit_names)
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise InputError("sample_rate is required when the audio is given as an array")
        rate = _check_rate(sample_rate)
        if source.ndim in (1, 2):
            limits.check_array(source.shape[0], rate)
        values = _array_to_scaled(source)
        return _finish(values, rate), notes

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if max_bytes is not None and len(data) > max_bytes:
            raise LimitError(_too_large(name, len(data), max_bytes, limit_name=limits.name("max_bytes")))
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        data = read_limited(name, max_bytes, "audio file", limit_name=limits.name("max_bytes"))
    else:
        raise InputError(
            f"unsupported audio source of type {type(source).__name__}: "
            "give a file path, the file's bytes, or a numpy array with sample_rate")

    if len(data) == 0:
        raise InputError(f"audio file is empty (0 bytes): {name}")
    if data[:4] in (b"RIFF", b"RIFX"):
        values, rate = _read_wav(data, name, notes, limits)
    else:
        values, rate = _read_soundfile(data, name, limits)
    del data  # the file's bytes are not needed while resampling
    if sample_rate is not None and _check_rate(sample_rate) != rate:
        raise InputError(
            f"sample_rate={sample_rate} was given but the header of {name} says {rate:g} Hz "
            "(leave sample_rate out for files)")
    return _finish(values, rate), notes


def read_limited(name: str, max_bytes: int | None, what: str, *, limit_name: str = "max_bytes") -> bytes:
    """The bytes of the regular file ``name``, refusing more than ``max_bytes`` (``None``: no
    limit); every problem (missing, not a regular file, unreadable, too large) is an InputError.
    ``what`` names the file in messages ("audio file", ".npy file"); ``limit_name`` names the
    limit ("raise max_bytes to accept it"; a command line may say "--max-bytes")."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {name}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise InputError(f"cannot read {what} {name}: {_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"not a regular file: {name}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise LimitError(_too_large(name, st.st_size, max_bytes, what, limit_name))
    try:
        with open(name, "rb") as fh:
            # Read one byte more than allowed: files in /proc report size 0, others may grow.
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except OSError as exc:  # permissions, I/O errors (e.g. /proc/self/mem)
        raise InputError(f"cannot read {what} {name}: {_reason(exc)}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise LimitError(_too_large(name, len(data), max_bytes, what, limit_name))
    return data


# ----------------------------------------------------------------------------- helpers

def _too_large(name: str, size: int, limit: int, what: str = "audio file", limit_name: str = "max_bytes") -> str:
    return (f"{what} is too large: {name} has {size} bytes, the limit is {limit} bytes "
            f"(raise {limit_name} to accept it)")


class _Limits:
    """``max_bytes`` (decoded audio as 16-bit PCM) and ``max_seconds`` for one load: how many
    frames a source may have, and the message naming the limit it passes."""

    def __init__(self, max_bytes: int | None, max_seconds: float | None,
                 limit_names: Mapping[str, str] | None) -> None:
        if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float))
                                        or not math.isfinite(max_seconds) or max_seconds <= 0):
            raise InputError(f"max_seconds must be a positive number of seconds or None, got {max_seconds!r}")
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.names = dict(limit_names or {})

    def name(self, limit: str) -> str:
        return self.names.get(limit, limit)

    def _bytes_frames(self, channels: int, rate: float) -> int | None:
        """The most frames whose 16-bit PCM (source: frames x channels; 16 kHz mono result:
        ceil(frames x 16000 / rate)) fits in max_bytes."""
        if self.max_bytes is None:
            return None
        source = self.max_bytes // (PCM16_BYTES * channels)
        result = math.floor(Fraction(self.max_bytes // PCM16_BYTES) * Fraction(rate) / SAMPLE_RATE)
        return min(source, result)

    def _seconds_frames(self, rate: float) -> int | None:
        if self.max_seconds is None:
            return None
        return math.floor(Fraction(self.max_seconds) * Fraction(rate))

    def frames(self, channels: int, rate: float) -> int | None:
        """The most frames allowed (``None``: no limit)."""
        found = [f for f in (self._bytes_frames(channels, rate), self._seconds_frames(rate)) if f is not None]
        return min(found) if found else None

    @staticmethod
    def pcm16(frames: int, channels: int, rate: float) -> tuple[int, bool]:
        """(bytes as 16-bit PCM, counted at the 16 kHz result?): the larger of the two counts."""
        source = frames * channels * PCM16_BYTES
        result = math.ceil(Fraction(frames) * SAMPLE_RATE / Fraction(rate)) * PCM16_BYTES
        return (result, True) if result > source else (source, False)

    def _binding(self, channels: int, rate: float) -> str:
        """The limit that allows fewer frames: the one a source passes first."""
        b, s = self._bytes_frames(channels, rate), self._seconds_frames(rate)
        return "max_seconds" if b is None or (s is not None and s < b) else "max_bytes"

    def check_declared(self, name: str, frames: int, channels: int, rate: float) -> None:
        """Refuse, before decoding, a header (or the data a WAV holds) beyond a limit."""
        allowed = self.frames(channels, rate)
        if allowed is None or frames <= allowed:
            return
        if self._binding(channels, rate) == "max_seconds":
            raise LimitError(
                f"audio is too long: {name} declares {frames} frames at {rate:g} Hz ({frames / rate:.3f} s), "
                f"the limit is {self.max_seconds:g} s (raise {self.name('max_seconds')} to accept it)")
        size, resampled = self.pcm16(frames, channels, rate)
        what = (f"{frames} frames at {rate:g} Hz ({size} bytes as 16-bit PCM once resampled to "
                f"{SAMPLE_RATE // 1000} kHz)" if resampled else
                f"{frames} frames of {channels} channel(s) ({size} bytes as 16-bit PCM)")
        raise LimitError(f"audio file is too large: {name} declares {what}, the limit is {self.max_bytes} "
                         f"bytes (raise {self.name('max_bytes')} to accept it)")

    def decoded_too_much(self, name: str, frames: int, channels: int, rate: float, declared: int | None) -> LimitError:
        """The error for a decoder stopped after ``frames`` frames, past a limit."""
        header = "its header declares no length" if declared is None else f"its header declares {declared} frames"
        if self._binding(channels, rate) == "max_seconds":
            return LimitError(
                f"audio is too long: {name} decodes to more than the limit of {self.max_seconds:g} s (decoding "
                f"stopped after {frames} frames at {rate:g} Hz; {header}; raise {self.name('max_seconds')} "
                "to accept it)")
        where = f" once resampled to {SAMPLE_RATE // 1000} kHz" if self.pcm16(frames, channels, rate)[1] else ""
        return LimitError(
            f"audio file is too large: {name} decodes to more than the limit of {self.max_bytes} bytes as "
            f"16-bit PCM{where} (decoding stopped after {frames} frames of {channels} channel(s) at {rate:g} Hz; "
            f"{header}; raise {self.name('max_bytes')} to accept it)")

    def check_array(self, frames: int, rate: float) -> None:
        """``max_seconds`` on an array's length (``max_bytes`` is for files)."""
        if self.max_seconds is not None and frames > self._seconds_frames(rate):
            raise LimitError(
                f"audio is too long: the audio array has {frames} samples at {rate:g} Hz "
                f"({frames / rate:.3f} s), the limit is {self.max_seconds:g} s "
                f"(raise {self.name('max_seconds')} to accept it)")


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _check_rate(rate, where: str = "") -> float:
    """``where``: e.g. " in the header of x.wav" (empty for a caller's sample_rate)."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise InputError(f"sample rate is not a number: {rate!r}") from None
    if not math.isfinite(r) or r < MIN_RATE or r > MAX_RATE:
        raise InputError(
            f"absurd sample rate: {rate} Hz{where} (supported: {MIN_RATE} to {MAX_RATE} Hz)")
    return r


def _array_to_scaled(arr: np.ndarray) -> np.ndarray:
    """A user's array -> (samples, channels) int16-scale values (float64; int16 left as is)."""
    a = arr
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim != 2:
        raise InputError(f"audio array must be 1-D (samples,) or 2-D (samples, channels), got shape {arr.shape}")
    if a.shape[1] == 0:
        raise InputError(f"audio array has no channels (shape {arr.shape})")
    if a.shape[0] == 0:
        raise InputError("audio array has no samples (length 0)")
    dt = a.dtype
    if not dt.isnative:  # big-endian arrays (e.g. read from a network stream): same values
        dt = dt.newbyteorder("=")
        a = a.astype(dt)
    if dt == np.int16:
        return a  # _finish keeps int16 as is when nothing is to be done
    if dt == np.uint8:
        return (a.astype(np.float64) - 128.0) * 256.0
    if dt == np.int8:
        return a.astype(np.float64) * 256.0
    if dt == np.int32:
        return a.astype(np.float64) / 65536.0
    if np.issubdtype(dt, np.floating):
        f = a.astype(np.float64)
        bad = ~np.isfinite(f)
        if bad.any():
            raise InputError(
                f"audio array contains NaN or infinite values ({int(bad.sum())} of {f.size} samples)")
        return f * 32768.0
    raise InputError(
        f"unsupported audio array dtype {dt}: use int16, int32, uint8, int8 or float in [-1, 1]")


def _finish(values: np.ndarray, rate: float) -> np.ndarray:
    """(samples, channels) int16-scale values (float64, or int16) at ``rate`` -> mono 16 kHz int16."""
    if values.shape[0] == 0:
        raise InputError("audio has no samples")
    if values.dtype == np.int16:
        if values.shape[1] == 1 and rate == SAMPLE_RATE:
            return values[:, 0].copy()  # the release's own input: passed through bit-exact
        values = values.astype(np.float64)
    mono = values[:, 0] if values.shape[1] == 1 else values.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr  # lazy: only needed for resampling
        mono = soxr.resample(np.ascontiguousarray(mono), rate, SAMPLE_RATE, quality="HQ")
        if mono.size == 0:
            raise InputError(f"audio is too short to resample from {rate:g} Hz to {SAMPLE_RATE} Hz")
    # In place: ``mono`` is ours here (a new array, or a view of the reader's own array).
    out = np.rint(mono, out=mono)
    np.clip(out, -32768.0, 32767.0, out=out)
    return out.astype(np.int16)


# ----------------------------------------------------------------------------- WAV reader

def _read_wav(data: bytes, name: str, notes: list[str], limits: _Limits) -> tuple[np.ndarray, float]:
    """Parse a RIFF/RIFX WAVE file; returns float64 (frames, channels) int16-scale and rate.
    A 'data' chunk shorter than declared is read as far as it goes, with a note in ``notes``."""
    big = data[:4] == b"RIFX"
    e = ">" if big else "<"
    if len(data) < 12:
        raise InputError(f"truncated WAV header: {name} has only {len(data)} bytes")
    if data[8:12] != b"WAVE":
        raise InputError(
            f"corrupt WAV header: {name} is a RIFF file of type {data[8:12]!r}, not 'WAVE'")
    fmt = None
    data_start = data_len = data_declared = None
    pos = 12
    n = len(data)
    while pos < n:
        if n - pos < 8:
            if fmt is not None and data_start is not None:
                break  # a stray byte or two after the last chunk
            raise InputError(
                f"truncated WAV header: {name} ends inside a chunk header at byte {pos}")
        cid = data[pos:pos + 4]
        (size,) = struct.unpack(e + "I", data[pos + 4:pos + 8])
        body = pos + 8
        if cid == b"data":
            if data_start is None:
                data_start, data_declared = body, size
                # A declared size beyond the end of the file is a truncated (or streamed)
                # file: keep what is there, as most readers do.
                data_len = min(size, n - body)
        elif cid == b"fmt ":
            if body + size > n:
                raise InputError(
                    f"truncated WAV header: {name} ends inside its 'fmt ' chunk "
                    f"(declared {size} bytes, {n - body} present)")
            if fmt is None:
                fmt = _parse_fmt(data[body:body + size], e, name)
        elif not _plausible_id(cid):
            if fmt is not None and data_start is not None:
                break  # junk after the audio: ignore
            raise InputError(
                f"corrupt WAV header: {name} has an invalid chunk id {_cid(cid)} at byte {pos}")
        elif body + size > n and fmt is None:
            raise InputError(
                f"truncated WAV header: {name} ends inside chunk {_cid(cid)} at byte {pos} "
                f"(declared {size} bytes, {n - body} present), before any 'fmt ' chunk")
        if cid == b"data" and fmt is not None:
            break  # everything we need; the rest may be metadata or padding
        pos = body + size + (size & 1)
    if fmt is None:
        raise InputError(f"corrupt WAV header: {name} has no 'fmt ' chunk")
    if data_start is None:
        raise InputError(f"corrupt WAV header: {name} has no 'data' chunk")

    kind, width, channels, rate = fmt
    block = width * channels
    n_frames = data_len // block
    if n_frames == 0:
        if data_declared >= block:
            raise InputError(
                f"truncated WAV file: {name} ends inside its 'data' chunk before the first "
                f"sample (declared {data_declared} bytes, {data_len} present)")
        raise InputError(f"WAV file has no audio samples (empty 'data' chunk): {name}")
    if data_declared != STREAMING_DATA_SIZE and n_frames * block < data_declared:
        notes.append(
            f"truncated WAV file: {name} declares {data_declared} bytes of audio data but "
            f"{data_len} are present; using the {n_frames} complete frames "
            f"({n_frames / rate:.3f} s) that are there")
    # Before decoding (8-bit -> float64 is 8 bytes a byte) and before resampling.
    limits.check_declared(name, n_frames, channels, rate)
    raw = memoryview(data)[data_start:data_start + n_frames * block]
    values = _decode_pcm(raw, kind, width, e, name)
    return values.reshape(n_frames, channels), rate


def _cid(cid: bytes) -> str:
    return repr(cid.decode("latin-1"))


def _plausible_id(cid: bytes) -> bool:
    return all(32 <= b < 127 for b in cid)


def _parse_fmt(body: bytes, e: str, name: str):
    if len(body) < 16:
        raise InputError(
            f"corrupt WAV header: {name} has a 'fmt ' chunk of {len(body)} bytes (at least 16 needed)")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack(e + "HHIIHH", body[:16])
    sub = tag
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise InputError(
                f"corrupt WAV header: {name} is WAVE_FORMAT_EXTENSIBLE but its 'fmt ' chunk has "
                f"only {len(body)} bytes (40 needed)")
        guid = body[24:40]
        (data1,) = struct.unpack(e + "I", guid[:4])
        if guid[8:16] != _GUID_DATA4 or data1 > 0xFFFF:
            raise InputError(
                f"unsupported WAV encoding: {name} is WAVE_FORMAT_EXTENSIBLE (format tag 0xFFFE) "
                f"with an unknown subformat GUID {guid.hex()}")
        sub = data1
    if sub not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        label = _FORMAT_NAMES.get(sub, "unknown")
        where = " (WAVE_FORMAT_EXTENSIBLE subformat)" if tag == WAVE_FORMAT_EXTENSIBLE else ""
        raise InputError(
            f"unsupported WAV encoding: {name} uses format tag 0x{sub:04X} ({label}){where}; "
            "supported are PCM (0x0001) and IEEE float (0x0003); convert it to PCM WAV or FLAC")
    if channels == 0:
        raise InputError(f"corrupt WAV header: {name} declares 0 channels")
    if block_align == 0 or block_align % channels:
        raise InputError(
            f"corrupt WAV header: {name} declares a block size of {block_align} bytes "
            f"for {channels} channel(s)")
    width = block_align // channels
    if bits == 0 or bits > 8 * width:
        raise InputError(
            f"corrupt WAV header: {name} declares {bits} bits per sample in "
            f"{width}-byte containers")
    if sub == WAVE_FORMAT_PCM and width not in (1, 2, 3, 4):
        raise InputError(
            f"unsupported WAV encoding: {name} is PCM with {width}-byte samples "
            "(supported: 8, 16, 24 and 32-bit)")
    if sub == WAVE_FORMAT_IEEE_FLOAT and width not in (4, 8):
        raise InputError(
            f"unsupported WAV encoding: {name} is IEEE float with {width}-byte samples "
            "(supported: 32 and 64-bit)")
    _check_rate(rate, f" in the header of {name}")
    kind = "float" if sub == WAVE_FORMAT_IEEE_FLOAT else "pcm"
    return kind, width, channels, float(rate)


def _decode_pcm(raw: bytes, kind: str, width: int, e: str, name: str) -> np.ndarray:
    """Raw sample bytes -> flat int16-scale values (float64; int16 for 16-bit PCM)."""
    if kind == "float":
        f = np.frombuffer(raw, dtype=np.dtype(e + ("f4" if width == 4 else "f8"))).astype(np.float64)
        bad = ~np.isfinite(f)
        if bad.any():
            raise InputError(
                f"WAV file contains NaN or infinite sample values ({int(bad.sum())} of "
                f"{f.size} samples): {name}")
        return f * 32768.0
    if width == 1:  # 8-bit WAV is unsigned, offset 128
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if width == 2:  # kept as int16 (see _finish): no float copy of the common case
        return np.frombuffer(raw, dtype=np.dtype(e + "i2")).astype(np.int16)
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        if e == "<":
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        else:
            v = b[:, 2] | (b[:, 1] << 8) | (b[:, 0] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / 256.0
    return np.frombuffer(raw, dtype=np.dtype(e + "i4")).astype(np.float64) / 65536.0


# ----------------------------------------------------------------------------- other formats

class _SeekClamped(io.BytesIO):
    """BytesIO for libsndfile's virtual I/O: a corrupt file can make it seek before the start;
    BytesIO raises ValueError inside soundfile's C callback (printed as "Exception ignored",
    not raised). Stay in place instead, as a failed seek on a real file does."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return super().seek(offset, whence)
        except ValueError:
            return self.tell()


def _sequential_reader(sf, fh):
    """``read(n)`` -> up to ``n`` frames of ``fh`` as float64 ``(frames, channels)``, read in
    sequence with libsndfile's ``sf_readf_double``. ``SoundFile.read`` seeks to the new position
    after every read, and libsndfile cannot seek to the end of a FLAC whose header does not
    state its length ("Internal psf_fseek() failed."): such a file could not be read to the end.
    Falls back on ``SoundFile.read`` if soundfile's internals are not what we expect."""
    try:
        snd, ffi, handle = sf._snd, sf._ffi, fh._file
        readf, error, error_number = snd.sf_readf_double, snd.sf_error, snd.sf_error_number
    except AttributeError:
        return lambda n: fh.read(n, dtype="float64", always_2d=True)
    channels = fh.channels

    def read(n: int) -> np.ndarray:
        out = np.empty((n, channels), np.float64)
        got = readf(handle, ffi.cast("double *", ffi.from_buffer(out)), n)
        code = error(handle)
        if code:
            raise RuntimeError(ffi.string(error_number(code)).decode("utf-8", "replace"))
        return out[:got]

    return read


def _read_soundfile(data: bytes, name: str, limits: _Limits) -> tuple[np.ndarray, float]:
    """Decode with libsndfile, block by block, into ``(frames, 1)`` int16-scale float64: each
    block is mixed to mono as it arrives, and the frames are counted against ``limits`` while
    decoding (a header may hide its length or declare less than there is)."""
    try:
        import soundfile as sf
    except (ImportError, OSError) as exc:  # OSError: libsndfile missing
        raise InputError(
            f"{name} is not a WAV file and reading other formats needs the 'soundfile' "
            f"package ({exc})") from None
    mono = None
    n = bad = 0
    try:
        with sf.SoundFile(_SeekClamped(data)) as fh:
            rate = fh.samplerate
            fmt = fh.format
            channels = fh.channels
            _check_rate(rate, f" in the header of {name}")
            declared = fh.frames if fh.frames < _UNKNOWN_FRAMES else None  # SF_COUNT_MAX: not stated
            if declared is not None:
                limits.check_declared(name, declared, channels, rate)
            allowed = limits.frames(channels, rate)
            block_frames = max(1, min(_SOUNDFILE_BLOCK, _SOUNDFILE_BLOCK_VALUES // channels))
            # Grown by doubling (ndarray.resize: realloc, so a large buffer is remapped, not
            # copied); never beyond the frames allowed plus the one that passes the limit.
            cap = block_frames if declared is None else max(1, min(declared, _FIRST_BUFFER_FRAMES))
            if allowed is not None:
                cap = min(cap, allowed + 1)
            mono = np.empty(cap, np.float64)
            read = _sequential_reader(sf, fh)
            while True:
                want = block_frames if allowed is None else min(block_frames, allowed + 1 - n)
                block = read(want)
                got = block.shape[0]
                if got == 0:
                    break
                if n + got > mono.shape[0]:
                    grown = max(n + got, 2 * mono.shape[0])
                    mono.resize(grown if allowed is None else min(grown, allowed + 1), refcheck=False)
                bad += int(np.count_nonzero(~np.isfinite(block)))
                block *= 32768.0
                # The channel mean row by row, as _finish would take it over the whole array.
                mono[n:n + got] = block[:, 0] if channels == 1 else block.mean(axis=1)
                n += got
                if allowed is not None and n > allowed:
                    raise limits.decoded_too_much(name, n, channels, rate, declared)
    except InputError:
        raise
    except MemoryError:
        raise InputError(
            f"not enough memory to decode {name} ({n} frames decoded); lower "
            f"{limits.name('max_bytes')} to refuse such files before they fill the memory") from None
    except Exception as exc:  # libsndfile: "Format not recognised", "unspecified internal error"...
        detail = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise InputError(
            f"not a readable audio file: {name} (neither WAV nor a format libsndfile "
            f"decodes: {detail})") from None
    if n == 0:
        raise InputError(f"{fmt} file has no audio samples: {name}")
    if bad:
        raise InputError(
            f"{fmt} file contains NaN or infinite sample values ({bad} of "
            f"{n * channels} samples): {name}")
    if n < mono.shape[0]:
        mono.resize(n, refcheck=False)
    return mono[:, None], float(rate)
