"""Property-based tests (hypothesis) of the input readers (audio, fbank .npy, the mesh readers)
and Predictor.predict: whatever bytes or arrays they are given, callers only ever see our error
classes, and a prediction (or a mesh) that is returned is finite. Bounded for CI (few examples, no deadline); the long runs are
the atheris harnesses in tests/fuzz/."""
from __future__ import annotations

import io
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from runtime.audio import load_audio  # noqa: E402
from runtime.errors import CmpError  # noqa: E402
from runtime.features import load_fbank_file  # noqa: E402

LIMIT = 1 << 20
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _wav(payload: bytes, tag=1, channels=1, rate=16000, bits=16) -> bytes:
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _seeds() -> list[bytes]:
    x = (np.random.default_rng(0).normal(0, 3000, 400)).astype(np.int16)
    seeds = [_wav(x.astype("<i2").tobytes()), _wav((x / 32768).astype("<f4").tobytes(), tag=3, bits=32),
             _wav(np.stack([x, x], 1).astype("<i2").tobytes(), channels=2, rate=44100)]
    try:
        import soundfile as sf
        for fmt in ("FLAC", "AIFF"):
            buf = io.BytesIO()
            sf.write(buf, x, 16000, format=fmt, subtype="PCM_16")
            seeds.append(buf.getvalue())
    except ImportError:
        pass
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes overwritten (header fields included), maybe cut or extended."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):  # a 32-bit field: sizes, rates, counts
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000]) | st.integers(0, 2**32 - 1))
            data[pos:pos + 4] = struct.pack("<I", value)[:max(0, len(data) - pos)]
        else:
            data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    tail = draw(st.binary(max_size=64))
    return bytes(data[:cut]) + tail if draw(st.booleans()) else bytes(data) + tail


@FAST
@given(st.one_of(st.binary(max_size=512), mutated(SEEDS)))
def test_audio_reader_raises_only_our_errors(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = load_audio(data, max_bytes=LIMIT)
        except CmpError:
            return
    assert out.dtype == np.int16 and out.ndim == 1 and out.size > 0


def _npy_seeds() -> list[bytes]:
    out = []
    rng = np.random.default_rng(1)
    for a in (rng.normal(size=(3, 64)).astype(np.float32), np.asfortranarray(rng.normal(size=(2, 64))),
              rng.normal(size=(1, 64)).astype(">f2"), np.zeros((2, 3), np.float32)):
        buf = io.BytesIO()
        np.save(buf, a)
        out.append(buf.getvalue())
    return out


NPY_SEEDS = _npy_seeds()


@FAST
@given(st.one_of(st.binary(max_size=300), mutated(NPY_SEEDS),
                 st.text(max_size=200).map(lambda h: b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h.encode())) + h.encode())))
def test_fbank_loader_raises_only_our_errors(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npy"
        p.write_bytes(data)
        try:
            out = load_fbank_file(p, max_bytes=LIMIT)
        except CmpError:
            return
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 64 and np.isfinite(out).all()


# --------------------------------------------------------------------------- mesh readers

def _mesh_seeds() -> dict[str, list[bytes]]:
    rng = np.random.default_rng(2)
    v = np.round(rng.normal(0, 50, (5, 3)), 3)
    rows = "".join(f"v {a:.9g} {b:.9g} {c:.9g}\n" for a, b, c in v).encode()

    def npy(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    def npz(compressed: bool, **arrays) -> bytes:
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, **arrays)
        return buf.getvalue()

    return {
        ".obj": [rows + b"f 1 2 3\nf 3 4 5\n", rows.replace(b"\n", b" 0.5 0.5 0.5\r\n") + b"f 1/1/1 2//2 3/3\n",
                 b"# c\n" + rows + b"vt 0 0\nf 1 2 3 4\n"],
        ".xyz": [b"# c\n" + rows.replace(b"v ", b""), rows.replace(b"v ", b"\t") + b"\n\n"],
        ".npy": [npy(v), npy(v.astype(">f4")), npy(np.asfortranarray(v.astype(np.int16)))],
        ".npz": [npz(False, vertices=v, vertices_frontal=v + 1), npz(True, vertices=v)],
    }


MESH_SEEDS = _mesh_seeds()
_OBJ_TOKENS = ["v", "f", "vt", "#", "1", "-2.5", "1e3", "nan", "1/2/3", "2//3", "/1", "0", "x", "9" * 25, "+4", "1_0"]


@st.composite
def obj_text(draw) -> bytes:
    """OBJ-like lines: keywords, numbers, corners, junk, with assorted spaces and line breaks."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        words = draw(st.lists(st.sampled_from(_OBJ_TOKENS), max_size=7))
        lines.append(draw(st.sampled_from([" ", "\t", "  ", "\x1f"])).join(words)
                     + draw(st.sampled_from(["\n", "\r\n", "\r", "\x0c", "\u2028", ""])))
    return "".join(lines).encode("utf-8")


def _mesh_inputs(suffix: str):
    extra = [obj_text()] if suffix in (".obj", ".xyz") else []
    return st.one_of(st.binary(max_size=300), mutated(MESH_SEEDS[suffix]), *extra)


def _check_mesh_reader(suffix: str, data: bytes) -> None:
    from runtime.mesh_read import npy_shape, read_mesh, read_obj

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"m{suffix}"
        p.write_bytes(data)
        if suffix == ".npy":
            try:
                shape = npy_shape(p)
                assert type(shape) is tuple and all(type(n) is int and n >= 0 for n in shape)
            except CmpError:
                pass
        try:
            if suffix == ".obj":
                v, t = read_obj(p)
            else:
                v, t = read_mesh(p), None
        except CmpError as exc:
            assert str(exc).startswith(str(p))
            return
    assert v.dtype == np.float64 and v.ndim == 2 and v.shape[1] == 3 and np.isfinite(v).all()
    if t is not None:
        assert t.dtype == np.int32 and t.shape[1:] == (3,) and (t.size == 0 or (t.min() >= 0 and t.max() < len(v)))


@pytest.mark.parametrize("suffix", [".obj", ".xyz", ".npy", ".npz"])
def test_mesh_readers_raise_only_our_errors(suffix):
    @FAST
    @given(_mesh_inputs(suffix))
    def check(data):
        _check_mesh_reader(suffix, data)

    check()


# --------------------------------------------------------------------------- Predictor.predict

@pytest.fixture(scope="module")
def predictor(models_dir):
    from runtime import Predictor

    return Predictor(models_dir, "supervised", device="cpu", vad=False)


_AUDIO_DTYPES = [np.int16, np.int32, np.uint8, np.int8, np.float32, np.float64, np.float16,
                 np.dtype(">i2"), np.dtype(">i4"), np.dtype(">f4"), np.int64, np.complex64, np.bool_]
_SPECIAL = [None, None, None, np.nan, np.inf, 3e38, -1e30, 1e4]


@st.composite
def predictor_inputs(draw):
    """(array, sample_rate): audio arrays (any dtype, 1-2 channels, a few thousand samples,
    often constant or with one odd value) or (T, 64) feature arrays (any scale, often with one
    odd value), and sometimes an arbitrary small array. Built from a seed (cheap to draw)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["audio", "audio", "features", "features", "other"]))
    special = draw(st.sampled_from(_SPECIAL))
    if kind == "audio":
        dtype = np.dtype(draw(st.sampled_from(_AUDIO_DTYPES)))
        shape = (draw(st.sampled_from([3000, 6000, 1, 0]) | st.integers(0, 6000)),) + ((draw(st.integers(1, 3)),) if draw(st.booleans()) else ())
        level = draw(st.sampled_from([0.0, 1e-4, 0.3, 1.0, 5.0]))
        x = rng.normal(0, level, shape)
        if draw(st.integers(0, 3)) == 0:
            x[...] = level  # constant: silence or DC
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            x = np.clip(x * info.max, info.min, info.max)
        if special is not None and x.size and dtype.kind == "f":
            x.flat[rng.integers(x.size)] = special
        with np.errstate(all="ignore"):
            array = x.astype(dtype)
        rate = draw(st.sampled_from([16000, 16000, 16000, 8000, 44100, 3, float("nan"), None]))
    elif kind == "features":
        frames = draw(st.sampled_from([1000, 300, 1300, 2, 1, 0]) | st.integers(0, 1300))
        array = (rng.normal(0, 1, (frames, 64)) * draw(st.sampled_from([1.0, 1.0, 30.0, 1e3]))).astype(
            draw(st.sampled_from([np.float32, np.float64, np.float16])))
        if special is not None and array.size:
            with np.errstate(all="ignore"):
                array.flat[rng.integers(array.size)] = special
        rate = None
    else:
        array = draw(hnp.arrays(dtype=st.sampled_from([np.float32, np.int16, np.uint8, np.bool_]),
                                shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)))
        rate = draw(st.sampled_from([None, 16000]))
    return array, rate


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(predictor_inputs())
def test_predict_raises_only_our_errors_and_returns_finite_results(predictor, case):
    array, rate = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = predictor.predict(array, sample_rate=rate)
        except CmpError as exc:
            hypothesis.event(type(exc).__name__ + ": " + str(exc)[:40])
            return
    hypothesis.event("predicted")
    for value in (r.embedding, r.params, r.vertices):
        assert np.isfinite(value).all()
