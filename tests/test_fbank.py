"""The vectorised fbank against a plain per-frame reference written from ORIGINAL.md 1b/1c."""
from __future__ import annotations

import math
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from runtime import fbank
from runtime.errors import InputError
from runtime.features import check_fbank, load_fbank_file, max_abs_value
from tests.helpers.npy_files import npy_bytes as npy

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WAVS = sorted((DATA / "voxceleb_wav").glob("*.wav"))
NPYS = sorted((DATA / "fbank_preprocessed").glob("*.npy"))
needs_wavs = pytest.mark.skipif(not WAVS, reason=f"real recordings not found in {DATA / 'voxceleb_wav'}")
needs_npys = pytest.mark.skipif(not NPYS, reason=f"release fbanks not found in {DATA / 'fbank_preprocessed'}")


# --------------------------------------------------------------------------- reference
# Written straight from the spec, one frame at a time, plain Python where it matters.

def ref_filterbank() -> np.ndarray:
    sr, nfft, nfilt, lowerf, upperf = 16000, 1024, 64, 20.0, 7200.0
    dfreq = sr / nfft

    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def melinv(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    melmin, melmax = mel(lowerf), mel(upperf)
    dmelbw = (melmax - melmin) / (nfilt + 1)
    edges = [melinv(melmin + dmelbw * i) for i in range(nfilt + 2)]
    filters = np.zeros((nfft // 2 + 1, nfilt))
    for j in range(nfilt):
        left = int(round(edges[j] / dfreq))
        center = int(round(edges[j + 1] / dfreq))
        right = int(round(edges[j + 2] / dfreq))
        height = 2.0 / ((right - left) * dfreq)
        b = left + 1
        while b < center:
            filters[b, j] = (b - left) * height / (center - left)
            b += 1
        if b == center:
            filters[b, j] = height
            b += 1
        while b < right:
            filters[b, j] = (b - right) * height / (center - right)
            b += 1
    return filters


def ref_log_mel(samples) -> np.ndarray:
    x = np.asarray(samples).astype(np.float64)
    filters = ref_filterbank()
    window = np.hamming(400)
    n_frames = int(len(x) / 160 + 1)
    prior = 0.0
    rows = []
    for k in range(n_frames):
        frame = x[160 * k:160 * k + 400]
        if len(frame) < 400:
            frame = np.resize(frame, 400)  # cyclic fill; empty -> zeros
            frame[400:] = 0  # the release's no-op
        emphasised = np.empty(400)
        emphasised[0] = frame[0] - 0.97 * prior
        for i in range(1, 400):
            emphasised[i] = frame[i] - 0.97 * frame[i - 1]
        prior = frame[-1]
        spectrum = np.fft.rfft(emphasised * window, 1024)
        power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
        rows.append(np.log(np.dot(power, filters).clip(1e-5, np.inf)))
    return np.array(rows).astype(np.float32)


def ref_normalise(logmel) -> np.ndarray:
    f = np.asarray(logmel, dtype=np.float32)
    f = f - f.mean(axis=0)
    f = f / (f.std(axis=0) + np.finfo(np.float32).eps)
    init = f.shape[0]
    while f.shape[0] < 1000:
        f = np.append(f, f[0:init], axis=0)
        f = f[0:1000, :]
    return f


def read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    x = 6000 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + rng.normal(0, 800, n)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- filterbank

def test_filterbank_matches_reference_exactly():
    fb = fbank.mel_filterbank()
    assert fb.shape == (513, 64) and fb.dtype == np.float64
    np.testing.assert_array_equal(fb, ref_filterbank())


def test_filterbank_shape_facts():
    fb = fbank.mel_filterbank()
    # Every filter has area-like normalisation: its column sums to 2/15.625 * (#bins/width)...
    # simpler invariants: non-negative, nothing beyond 7200 Hz (+ rounding), each filter non-empty.
    assert (fb >= 0).all()
    assert (fb > 0).any(axis=0).all()
    assert not fb[round(7200 / 15.625) + 1:].any()
    # mel_filterbank() hands out copies: editing one does not change the next.
    fb[:] = 0
    assert fbank.mel_filterbank().any()


# --------------------------------------------------------------------------- log-mel

EDGE_LENGTHS = [0, 1, 80, 159, 160, 161, 239, 240, 320, 399, 400, 401, 480, 559, 560, 561, 639, 640, 641, 720, 799]


@pytest.mark.parametrize("n", EDGE_LENGTHS + [160 * 40 + r for r in (0, 1, 80, 159, 239 - 160, 240 - 160)])
def test_log_mel_edge_lengths(n):
    x = synthetic(n, seed=n)
    fast = fbank.log_mel(x)
    ref = ref_log_mel(x)
    assert fast.shape == ref.shape == (int(n / 160 + 1), 64)
    assert fast.dtype == np.float32
    assert np.abs(fast - ref).max() <= 1e-4


def test_log_mel_residues_mod_160():
    # Every residue class once, so every tail-frame configuration (1, 2 or 3 short frames).
    for r in range(0, 160, 7):
        x = synthetic(160 * 5 + r, seed=r)
        assert np.abs(fbank.log_mel(x) - ref_log_mel(x)).max() <= 1e-4, r


def test_log_mel_quirks():
    # Empty input: one empty frame of 400 zeros -> log(1e-5) everywhere.
    np.testing.assert_array_equal(fbank.log_mel(np.zeros(0, np.int16)), np.full((1, 64), np.float32(np.log(1e-5))))
    # Not scaled to [-1, 1]: doubling the samples adds log(4) to every (non-floored) energy.
    x = synthetic(4000)
    d = fbank.log_mel(x.astype(np.float64) * 2) - fbank.log_mel(x)
    np.testing.assert_allclose(d, np.log(4.0), atol=1e-5)
    # The first sample of a frame is pre-emphasised against the previous frame's LAST sample.
    y = x.copy()
    y[160 + 239] += 1000  # last sample of frame 0 == prior of frame 1, inside frame 1 too
    assert np.abs(fbank.log_mel(y) - ref_log_mel(y)).max() <= 1e-4


def test_log_mel_rejects_bad_input():
    with pytest.raises(InputError, match="1-D"):
        fbank.log_mel(np.zeros((2, 100), np.int16))
    with pytest.raises(InputError, match="dtype"):
        fbank.log_mel(np.array(["a", "b"]))


@needs_wavs
@pytest.mark.parametrize("path", WAVS, ids=lambda p: p.stem)
def test_real_recordings_match_reference(path):
    from runtime.vad import remove_silence

    x = read_wav(path)
    voiced = remove_silence(x)
    fast_raw = fbank.log_mel(voiced)
    ref_raw = ref_log_mel(voiced)
    assert np.abs(fast_raw - ref_raw).max() <= 1e-4
    fast = fbank.compute_fbank(x)
    ref = ref_normalise(ref_raw)
    assert fast.shape == ref.shape == (1000, 64) and fast.dtype == np.float32
    assert np.abs(fast - ref).max() <= 1e-4
    # without VAD: the whole recording
    assert np.abs(fbank.compute_fbank(x, vad=False) - ref_normalise(ref_log_mel(x))).max() <= 1e-4


# --------------------------------------------------------------------------- normalisation

def test_normalise_matches_reference_and_tiles():
    raw = fbank.log_mel(synthetic(160 * 357 + 17))  # T = 358 frames
    out = fbank.normalise(raw)
    assert out.shape == (1000, 64) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref_normalise(raw))
    t = raw.shape[0]
    np.testing.assert_array_equal(out[t:2 * t], out[:t])  # repeated from frame 0
    np.testing.assert_array_equal(out[2 * t:], out[:1000 - 2 * t])


@pytest.mark.parametrize("t", [1, 999, 1000, 1001, 1751])
def test_normalise_lengths(t):
    rng = np.random.default_rng(t)
    raw = rng.normal(3, 2, (t, 64)).astype(np.float32)
    if t == 1:  # one frame has no spread: refused unless asked for the release's numbers
        with pytest.raises(InputError, match="^no signal in the audio: mel filter 0 has a log-mel standard deviation of 0 over 1 frame"):
            fbank.normalise(raw)
    out = fbank.normalise(raw, strict=t > 1)
    assert out.shape == (max(t, 1000), 64)
    np.testing.assert_array_equal(out, ref_normalise(raw))
    if t > 1:
        assert np.abs(out[:t].mean(0)).max() < 1e-5 and np.abs(out[:t].std(0) - 1).max() < 1e-5


def test_normalise_rejects_bad_shape():
    with pytest.raises(InputError, match=r"\(T, 64\)"):
        fbank.normalise(np.zeros((10, 40), np.float32))
    with pytest.raises(InputError, match="T >= 1"):
        fbank.normalise(np.zeros((0, 64), np.float32))


@needs_npys
@pytest.mark.parametrize("path", NPYS, ids=lambda p: p.stem)
def test_release_features_have_our_format(path):
    """The release's own .npy files are what normalise() produces: float32 (T, 64), T >= 1000,
    a T < 1000 utterance repeated from frame 0 and cut at 1000, each period zero-mean and
    unit-std per filter. Re-normalising one period reproduces the file."""
    a = np.load(path)
    assert a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 64 and a.shape[0] >= 1000
    t = a.shape[0]
    period = next((p for p in range(1, t) if np.array_equal(a[p:], a[:t - p])), t)
    if t > 1000:
        assert period == t  # no crop, no tiling
    one = a[:period]
    assert np.abs(one.mean(0)).max() < 1e-4 and np.abs(one.std(0) - 1).max() < 1e-4
    assert np.abs(fbank.normalise(one) - a).max() < 1e-4


# --------------------------------------------------------------------------- chaining

def test_compute_fbank_requires_int16():
    with pytest.raises(InputError, match="int16"):
        fbank.compute_fbank(np.zeros(16000, np.float32))


def test_fbank_from_array_source():
    x = synthetic(16000 * 3)
    a = fbank.fbank_from_source(x, 16000, vad=False)
    np.testing.assert_array_equal(a, fbank.compute_fbank(x, vad=False))


@needs_wavs
def test_fbank_from_file_source():
    a = fbank.fbank_from_source(WAVS[0])
    np.testing.assert_array_equal(a, fbank.compute_fbank(read_wav(WAVS[0])))


def test_frontend_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "import runtime.audio, runtime.vad, runtime.fbank, runtime.demo_signal\n"
            "runtime.fbank.compute_fbank(runtime.demo_signal.demo_voice(1.0))\n"
            "runtime.audio.load_audio(np.zeros(8000, np.float32), 8000)\n"
            "import runtime.frontend_graph\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr


def test_log_mel_is_thread_safe_and_repeatable():
    """log_mel reuses per-thread work buffers: concurrent calls must not interfere."""
    import threading

    xs = [synthetic(160 * 300 + 7 * i, seed=i) for i in range(4)]
    refs = [fbank.log_mel(x) for x in xs]
    ok = []

    def work(i):
        ok.append(all(np.array_equal(fbank.log_mel(xs[i]), refs[i]) for _ in range(10)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert ok == [True] * 4
    # the result never aliases the work buffers
    a = fbank.log_mel(xs[0])
    fbank.log_mel(xs[1])
    np.testing.assert_array_equal(a, refs[0])


# --------------------------------------------------------------------------- no signal

def no_signal(why: str) -> str:
    """The one "no signal" message, as a full-match pattern."""
    return "^" + re.escape(
        f"no signal in the audio: {why}; features are normalised per mel filter by its spread over time, "
        "so every filter's log-mel must vary (standard deviation over frames at least 0.01): digital "
        "silence, a constant (DC) level or a steady tone carry no voice") + "$"


def steady(n: int) -> np.ndarray:
    """Period 4 with x[3] = 0 and n % 4 == 0: every frame, edge frames included, is the same."""
    return np.tile(np.array([1000, 0, -1000, 0], np.int16), n // 4)


@pytest.mark.parametrize("x, why", [
    (np.zeros(48000, np.int16), "all 48000 samples are 0"),
    (np.full(48000, -7, np.int16), "all 48000 samples are -7"),
    (np.full(1, 5, np.int16), "all 1 samples are 5"),
    (steady(48004), "mel filter 0 has a log-mel standard deviation of 0 over 301 frame(s)"),
])
def test_no_signal_is_refused_by_compute_fbank_and_check_signal_alike(x, why):
    with pytest.raises(InputError, match=no_signal(why)):
        fbank.compute_fbank(x, vad=False)
    with pytest.raises(InputError, match=no_signal(why)):
        fbank.check_signal(x)


def test_steady_tone_is_no_signal():
    t = np.arange(48000) / 16000
    x = np.rint(10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)  # period 16 divides the hop
    start = "^no signal in the audio: mel filter 50 has a log-mel standard deviation of 0.00"
    with pytest.raises(InputError, match=start):
        fbank.compute_fbank(x, vad=False)
    with pytest.raises(InputError, match=start):
        fbank.check_signal(x)


def test_normalise_refuses_a_flat_filter_and_strict_false_gives_the_releases_numbers():
    raw = np.random.default_rng(0).normal(0, 1, (500, 64)).astype(np.float32)
    raw[:, 7] = 3.25
    with pytest.raises(InputError, match=no_signal("mel filter 7 has a log-mel standard deviation of 0 over 500 frame(s)")):
        fbank.normalise(raw)
    np.testing.assert_array_equal(fbank.normalise(raw, strict=False), ref_normalise(raw))
    raw[:, 7] += np.where(np.arange(500) % 2, 0.0101, -0.0101).astype(np.float32)  # std 0.0101
    assert fbank.normalise(raw).shape == (1000, 64)


def _verdict(fn, x):
    try:
        fn(x)
    except InputError as exc:
        return str(exc)
    return None


def test_check_signal_gives_compute_fbanks_verdict_on_edge_signals():
    rng = np.random.default_rng(3)
    cases = [synthetic(n, seed=n) for n in (2, 161, 400, 561, 16000)]
    cases += [steady(n) for n in (4000, 4004, 4002)]
    cases += [rng.integers(-1, 2, 8000).astype(np.int16), np.array([0, 1] * 2000, np.int16)]
    verdicts = []
    for x in cases:
        expected = _verdict(lambda y: fbank.compute_fbank(y, vad=False), x)
        assert _verdict(fbank.check_signal, x) == expected, len(x)
        verdicts.append(expected is None)
    assert True in verdicts and False in verdicts  # both answers occur


@needs_wavs
@pytest.mark.parametrize("path", WAVS, ids=lambda p: p.stem)
def test_real_recordings_have_signal_and_the_cheap_proof_suffices(path, monkeypatch):
    from runtime.vad import remove_silence

    x = read_wav(path)
    for y in (x, remove_silence(x), x[:8000]):
        std = fbank.log_mel(y).astype(np.float64).std(axis=0)
        assert std.min() > 50 * fbank.MIN_SPREAD  # smallest over the 7 recordings: 1.07
        fbank.compute_fbank(y, vad=False)
    monkeypatch.setattr(fbank, "log_mel", lambda y: pytest.fail("check_signal computed the whole log-mel"))
    fbank.check_signal(x)
    fbank.check_signal(remove_silence(x))


def test_check_signal_falls_back_to_the_whole_log_mel(monkeypatch):
    """A signal whose 32 sampled frames are all alike, other frames not: the proof fails,
    the whole log-mel decides (and accepts, like compute_fbank)."""
    x = steady(160 * 400)
    x[160 * 200 + 50:160 * 200 + 90] = 3000  # one burst between the sampled frames
    calls = []
    full = fbank.log_mel
    monkeypatch.setattr(fbank, "log_mel", lambda y: calls.append(len(y)) or full(y))
    fbank.check_signal(x)
    assert calls == [len(x)]
    fbank.compute_fbank(x, vad=False)


def test_fbank_from_source_max_bytes(tmp_path):
    sf = pytest.importorskip("soundfile")
    p = tmp_path / "a.wav"
    sf.write(p, synthetic(16000), 16000, subtype="PCM_16")
    size = p.stat().st_size
    with pytest.raises(InputError, match="^" + re.escape(
            f"audio file is too large: {p} has {size} bytes, the limit is 1000 bytes (raise max_bytes to accept it)") + "$"):
        fbank.fbank_from_source(p, vad=False, max_bytes=1000)
    assert fbank.fbank_from_source(p, vad=False, max_bytes=size).shape == (1000, 64)


# --------------------------------------------------------------------------- feature files and values

def header(descr: str, shape: str) -> str:
    return "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)


UNCLOSED = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64), " + "'" * 3


@pytest.mark.parametrize("content, reason", [
    (npy(UNCLOSED), "corrupt header: EOF in multi-line string"),  # numpy.load: TokenError
    (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64),, }"),  # numpy.load: SyntaxError
     "corrupt header: Cannot parse header: \"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64),, } \\n\""),
    (npy("{'descr': 5, 'fortran_order': False, 'shape': (1, 64), }"),  # numpy.load: TypeError
     "corrupt header: descr is not a valid dtype descriptor: 5"),
    (b"PK\x03\x04" + bytes(100),  # numpy.load: BadZipFile (taken for an .npz)
     "corrupt header: the magic string is not correct; expected b'\\x93NUMPY', got b'PK\\x03\\x04\\x00\\x00'"),
    (npy(header("<f4", "(100000000000, 64)"), bytes(1000)),  # numpy.load: MemoryError
     "its header declares (100000000000, 64) float32 = 25600000000000 bytes of data, the file holds 1000"),
    (npy(header("<f4", "(2, 64)"), bytes(256)), "its header declares (2, 64) float32 = 512 bytes of data, the file holds 256"),
    (npy(header("<f4", "(1, 64)"), bytes(257)), "its header declares (1, 64) float32 = 256 bytes of data, the file holds 257"),
    (npy(header("<f4", "(-1, 64)")), "corrupt header: shape (-1, 64)"),
    (npy(header("<f4", "(1.5, 64)")), "corrupt header: shape is not valid: (1.5, 64)"),
    (npy(header("<f4", "(1, 64)"), version=3), "corrupt header: format version 3.0 (supported: 1.0 and 2.0)"),
    (b"\x00\x01not numpy", "corrupt header: the magic string is not correct; expected b'\\x93NUMPY', got b'\\x00\\x01not '"),
])
def test_malformed_npy_files_raise_input_error(tmp_path, content, reason):
    p = tmp_path / "bad.npy"
    p.write_bytes(content)
    with pytest.raises(InputError, match="^" + re.escape(f"{p}: not a readable .npy array ({reason})") + "$"):
        load_fbank_file(p)


def test_npy_dtype_and_shape_are_checked_before_reading(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="^" + re.escape(f"{p}: dtype object is not supported; expected float32 features of shape (T, 64)") + "$"):
        load_fbank_file(p)
    p.write_bytes(npy(header("<i2", "(10000000000, 64)")))
    with pytest.raises(InputError, match="^" + re.escape(f"{p}: dtype int16 is not supported; expected float32 features of shape (T, 64)") + "$"):
        load_fbank_file(p)
    p.write_bytes(npy(header("<f4", "(64, 10000000000)")))
    with pytest.raises(InputError, match="^" + re.escape(
            f"{p}: expected shape (T, 64), got (64, 10000000000) (transposed? the release's files are (T, 64))") + "$"):
        load_fbank_file(p)


def test_npy_size_limit_and_file_errors(tmp_path):
    a = np.random.default_rng(0).normal(size=(1000, 64)).astype(np.float32)
    p = tmp_path / "a.npy"
    np.save(p, a)
    size = p.stat().st_size
    with pytest.raises(InputError, match="^" + re.escape(
            f".npy file is too large: {p} has {size} bytes, the limit is {size - 1} bytes (raise max_bytes to accept it)") + "$"):
        load_fbank_file(p, max_bytes=size - 1)
    np.testing.assert_array_equal(load_fbank_file(p, max_bytes=size), a)
    np.testing.assert_array_equal(load_fbank_file(p, max_bytes=None), a)
    with pytest.raises(InputError, match="^" + re.escape(f"{tmp_path / 'no.npy'}: file not found") + "$"):
        load_fbank_file(tmp_path / "no.npy")
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(InputError, match="^" + re.escape(f"not a regular file: {tmp_path / 'd.npy'}") + "$"):
        load_fbank_file(tmp_path / "d.npy")
    if Path("/proc/self/mem").exists():
        with pytest.raises(InputError, match="^" + re.escape("cannot read .npy file /proc/self/mem: Input/output error") + "$"):
            load_fbank_file("/proc/self/mem")


def test_npy_layouts_numpy_writes_are_read(tmp_path):
    import io

    a = np.random.default_rng(1).normal(size=(3, 64))
    for name, arr in {"f4": a.astype(np.float32), "be": a.astype(">f4"), "f8_fortran": np.asfortranarray(a),
                      "f2": a.astype(np.float16)}.items():
        np.save(tmp_path / f"{name}.npy", arr)
        got = load_fbank_file(tmp_path / f"{name}.npy")
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, arr.astype(np.float32))
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a.astype(np.float32), version=(2, 0))
    (tmp_path / "v2.npy").write_bytes(buf.getvalue())
    np.testing.assert_array_equal(load_fbank_file(tmp_path / "v2.npy"), a.astype(np.float32))


def test_values_no_normalised_fbank_can_have():
    a = np.zeros((1000, 64), np.float32)
    a[5, 3] = 3e38
    with pytest.raises(InputError, match="^" + re.escape(
            "fbank: value 3e+38 at frame 5, filter 3 is not a normalised fbank value: features normalised "
            "per filter over 1000 frames stay within +-63.2 (2 x sqrt(frames - 1)); give the release's "
            "normalised features, or audio") + "$"):
        check_fbank(a)
    b = np.zeros((4000, 64))
    b[7, 9] = -1e300  # float64: refused before the float32 cast would make it -inf
    with pytest.raises(InputError, match="^" + re.escape(
            "fbank: value -1e+300 at frame 7, filter 9 is not a normalised fbank value: features normalised "
            "per filter over 4000 frames stay within +-126.5 (2 x sqrt(frames - 1))")):
        check_fbank(b)
    assert max_abs_value(1) == max_abs_value(1000) == 2 * math.sqrt(999)
    # the extreme a normalisation can produce: one frame apart from all the others
    raw = np.zeros((1000, 64), np.float32)
    raw[0] = 1.0
    extreme = fbank.normalise(raw)
    assert abs(np.abs(extreme).max() - math.sqrt(999)) < 1e-3
    check_fbank(extreme)
    check_fbank(np.full((1000, 64), np.float32(max_abs_value(1000)) * np.float32(0.9999)))


@needs_npys
def test_release_features_stay_within_the_bound():
    for path in NPYS:
        a = np.load(path)
        # |x| <= sqrt(T - 1) holds exactly (shorter utterances were tiled: tighter still)
        assert np.abs(a).max() <= math.sqrt(a.shape[0] - 1) <= max_abs_value(a.shape[0]) / 2, path.name
        check_fbank(a)


def test_check_signal_rejects_bad_arrays():
    for x, shape in ((np.zeros(0, np.int16), "(0,)"), (np.zeros((2, 100), np.int16), "(2, 100)")):
        with pytest.raises(InputError, match="^" + re.escape(
                f"check_signal expects a non-empty 1-D array of samples, got shape {shape}") + "$"):
            fbank.check_signal(x)
