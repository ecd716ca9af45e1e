"""runtime.mesh_io.write_obj formats with a compiled formatter (runtime/src/meshtext.cpp): the files
must be byte for byte what the former writer (Python's % formatting, kept here as the reference)
wrote, for every finite value: ties, values next to ties, the ends of %g's fixed notation, tiny,
huge and subnormal magnitudes, float32 and float64, with and without colours."""
from __future__ import annotations

import errno
import os
import sys
from decimal import Decimal

import numpy as np
import pytest

from runtime import _meshtext
from runtime.errors import InputError
from runtime.mesh_io import format_g, write_obj

N_RELEASE = 53215


def reference_obj(vertices, triangles, colors=None) -> bytes:
    """The former write_obj's text (benchmarks/writer_speed.py keeps it: its format strings define the bytes)."""
    from benchmarks.writer_speed import obj_text_reference

    return obj_text_reference(vertices, triangles, colors).encode("ascii")


def ties(digits: int) -> np.ndarray:
    """Doubles whose exact decimal value has ``digits + 1`` significant digits, the last a 5:
    halfway between two ``digits``-digit numbers. ``m / 2**s`` with m odd has s decimals, so in
    ``[10**(digits-s), 10**(digits+1-s))`` it has digits + 1 of them; and 10-digit integers
    ending in 5, times powers of ten (rounded by division in the formatter)."""
    rng = np.random.default_rng(digits)
    out = []
    for s in range(1, 40):
        lo, hi = Decimal(10) ** (digits - s) * 2 ** s, Decimal(10) ** (digits + 1 - s) * 2 ** s
        first, last = int(lo) + 1, int(hi)
        if first < last and last < 2 ** 53:
            m = rng.integers(first, last, 40, endpoint=False) | 1
            out.append(np.ldexp(m[m < last].astype(np.float64), -s))
    n = rng.integers(10 ** digits, 10 ** (digits + 1), 40) // 10 * 10 + 5
    out += [n * 10.0 ** j for j in range(0, 6)]
    values = np.concatenate(out)
    for x in values[:50].tolist():  # (the construction, checked)
        assert Decimal(x).normalize().as_tuple().digits[-1] == 5
        assert len(Decimal(x).normalize().as_tuple().digits) == digits + 1
    return values


def next_to(values: np.ndarray) -> np.ndarray:
    """The doubles just below and above: their products with powers of ten may round onto the tie."""
    with np.errstate(over="ignore"):
        out = np.concatenate([np.nextafter(values, -np.inf), np.nextafter(values, np.inf)])
    return out[np.isfinite(out)]


SPECIAL = np.array([
    0.0, -0.0, 0.5, 1.5, 2.5, 0.125, 0.1, 1 / 3, 2 / 3, 1.0, 10.0, 100.0,
    # ties and near-ties at 9 digits
    1.0000000005, 123456789.5, 100000000.5, 999999999.5, 0.000123456785, 9.9999999996, 9.9999999995,
    # the ends of %g's fixed notation (exponent -5 and 9 at 9 digits, 6 at 6 digits)
    1e-4, 1e-5, 9.99999999e-5, 9.999999995e-5, 9.9999999949e-5, 0.000099999999951, 1e9, 999999999.0,
    999999999.4999999, 99999.9995, 999999.5, 999999.4999, 9.999995e-5, 9.9999949e-5,
    # huge, tiny, subnormal; where the fast path's powers of ten end
    1e-300, 1e300, 5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308,
    1e-13, 1e-14, 1e-15, 1e22, 1e23, 1e29, 1e30, 1e31, 9.999999995e29, 123456789012345678901234567890.0,
    float(np.float32(1e-45)), float(np.float32(3.4028235e38)), float(np.float32(1.1754944e-38)),
])


def powers_of_ten(digits: int) -> np.ndarray:
    """10**i for i = -25..35 (rounded beyond 1e22: the fast path's estimate of the exponent can be
    one off there), their neighbours, and values just below them that round up to them at
    ``digits`` digits, or just not."""
    p = np.array([float(f"1e{i}") for i in range(-25, 36)])
    return np.concatenate([p, next_to(p), p * (1 - 0.4 * 10.0 ** -digits), p * (1 - 0.6 * 10.0 ** -digits)])


def awkward_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mesh-like float32 values mixed with what formatting gets wrong first: zeros of both signs,
    ties and their neighbours, powers of ten and their neighbours, tiny and huge magnitudes,
    subnormals."""
    tie = np.concatenate([ties(9), ties(6)])
    parts = [(rng.standard_normal(n) * 60).astype(np.float32),
             (rng.standard_normal(n) * 1e5).astype(np.float32),
             (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 12, n)).astype(np.float32),
             rng.standard_normal(n) * 10.0 ** rng.integers(-320, 300, n),
             rng.standard_normal(n) * 10.0 ** rng.integers(-16, 32, n),
             rng.integers(-2 ** 20, 2 ** 20, n) * 2.0 ** rng.integers(-40, 20, n),
             np.nextafter(10.0 ** rng.integers(-16, 32, n), rng.choice([-np.inf, np.inf], n)),
             np.resize(np.concatenate([tie, next_to(tie)]), n),
             np.resize(np.concatenate([SPECIAL, next_to(SPECIAL), powers_of_ten(9), powers_of_ten(6)]), n)]
    values = np.concatenate([p.astype(np.float64) for p in parts])
    values *= rng.choice([-1.0, 1.0], values.size)
    return rng.permutation(values)


def colour_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Colours in [0, 1] (%.6g): 0, 1, 1/2, 1/3, ties at 6 digits and their neighbours, random."""
    special = np.array([0.0, -0.0, 1.0, 0.5, 1 / 3, 2 / 3, 0.1, 0.9999995, 0.99999949999, 0.0001, 9.999995e-5,
                        1e-5, 1.5, -2.0, 5e-324])
    tie = ties(6)
    tie = tie[tie < 1]
    pool = np.concatenate([special, tie, next_to(tie), rng.random(n)])
    return rng.choice(pool, (n, 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_write_obj_is_byte_identical_to_the_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    values = awkward_values(rng, 3000)
    v = values[:len(values) // 3 * 3].reshape(-1, 3)
    t = rng.integers(0, len(v), (2 * len(v), 3))
    for colors in (None, rng.random((len(v), 3)), rng.integers(0, 256, (len(v), 3)).astype(np.uint8),
                   colour_values(rng, len(v))):
        path = write_obj(tmp_path / "m.obj", v, t, colors)
        assert path.read_bytes() == reference_obj(v, t, colors)


def test_float32_meshes_and_colours(tmp_path):
    rng = np.random.default_rng(5)
    values = awkward_values(rng, 2000)
    with np.errstate(over="ignore"):
        v = values[:len(values) // 3 * 3].reshape(-1, 3).astype(np.float32)
    v[~np.isfinite(v)] = 0
    t = rng.integers(0, len(v), (len(v), 3)).astype(np.int32)
    colors = colour_values(rng, len(v)).astype(np.float32)
    for c in (None, colors):
        path = write_obj(tmp_path / "m.obj", v, t, c)
        assert path.read_bytes() == reference_obj(v, t, c)


def test_release_sized_meshes_are_byte_identical(tmp_path):
    rng = np.random.default_rng(7)
    t = rng.integers(0, N_RELEASE, (105840, 3)).astype(np.int32)
    for v in ((rng.standard_normal((N_RELEASE, 3)) * 1e5).astype(np.float32),  # benchmarks/writer_speed.py's mesh
              (rng.standard_normal((N_RELEASE, 3)) * 0.1).astype(np.float32),
              rng.standard_normal((N_RELEASE, 3)) * 100):  # float64 (full 53-bit mantissas)
        for colors in (None, rng.random((N_RELEASE, 3)).astype(np.float32)):
            path = write_obj(tmp_path / "m.obj", v, t, colors)
            assert path.read_bytes() == reference_obj(v, t, colors)


@pytest.mark.parametrize("threads", [1, 2])
def test_one_or_two_threads_write_the_same_file(tmp_path, threads):
    """The text is made in pieces of about 1 MB, formatted by one or two threads, written in order."""
    rng = np.random.default_rng(threads)
    v = rng.standard_normal((N_RELEASE, 3)) * 10.0 ** rng.integers(-3, 4, (N_RELEASE, 3))
    t = rng.integers(0, N_RELEASE, (3 * N_RELEASE, 3))
    c = rng.random((N_RELEASE, 3))
    with open(tmp_path / "m.obj", "wb") as f:
        _meshtext.write_obj(f.fileno(), v, t, c, threads)
    assert (tmp_path / "m.obj").read_bytes() == reference_obj(v, t, c)


def test_edge_shapes(tmp_path):
    for v, t in ((np.zeros((0, 3)), np.zeros((0, 3), np.int64)), (np.zeros((1, 3)), np.zeros((0, 3), np.int64)),
                 (np.array([[1, 2, 3]], np.int16), np.zeros((1, 3), np.uint8)),
                 (np.ones((10, 3), bool), np.full((1, 3), 9)),
                 (np.arange(30, dtype=">f8").reshape(10, 3), np.full((2, 3), 9, ">i4")),
                 (np.arange(60, dtype=np.float32).reshape(10, 6)[:, ::2], np.full((4, 3), 9, np.uint64)[::2]),
                 (np.arange(30, dtype=np.float16).reshape(10, 3), np.asfortranarray(np.full((3, 3), 9)))):
        path = write_obj(tmp_path / "m.obj", v, t)
        assert path.read_bytes() == reference_obj(v, t)


def test_nan_and_bad_shapes_are_refused(tmp_path):
    v = np.zeros((3, 3))
    v[1, 1] = np.nan
    with pytest.raises(InputError, match="^vertices: contains NaN or infinite values$"):
        write_obj(tmp_path / "m.obj", v, np.zeros((1, 3), np.int64))
    with pytest.raises(InputError, match=r"^triangles: index 3 out of range for 3 vertices$"):
        write_obj(tmp_path / "m.obj", np.zeros((3, 3)), np.full((1, 3), 3))
    assert not (tmp_path / "m.obj").exists()


def test_the_binding_checks_indices_and_reports_write_errors(tmp_path):
    """The compiled writer's own guards (write_obj checks first): an index outside the vertices
    would overrun its buffer, so it is refused; a failed write is an OSError with its errno."""
    v, t = np.zeros((3, 3)), np.array([[0, 1, 3]])
    with open(tmp_path / "m.obj", "wb") as f:
        for bad in (t, -t, t.astype(np.int32)):
            with pytest.raises(IndexError):
                _meshtext.write_obj(f.fileno(), v, bad, None, 1)
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as f, pytest.raises(OSError) as caught:
            _meshtext.write_obj(f.fileno(), v, np.array([[0, 1, 2]]), None, 2)
        assert caught.value.errno == errno.ENOSPC


def test_a_missing_extension_is_a_clear_error(tmp_path, monkeypatch):
    import runtime

    monkeypatch.delattr(runtime, "_meshtext")
    monkeypatch.setitem(sys.modules, "runtime._meshtext", None)  # import fails
    with pytest.raises(ImportError, match="compiled OBJ formatter, is not built: run 'pip install -e .'"):
        write_obj(tmp_path / "m.obj", np.zeros((3, 3)), np.zeros((1, 3), np.int64))


@pytest.mark.parametrize("precision", range(1, 10))
def test_format_g_matches_python(precision):
    rng = np.random.default_rng(precision)
    x = np.concatenate([awkward_values(rng, 1000), ties(precision), next_to(ties(precision)), powers_of_ten(precision)])
    assert format_g(x, precision) == [f"%.{precision}g" % value for value in x.tolist()]


def test_format_g_refuses():
    with pytest.raises(ValueError):
        format_g([1.0], 10)
    with pytest.raises(InputError):
        format_g([1.0, np.inf], 9)


def test_face_numbers_for_any_index_size():
    """" %d" for the face lines: eight digits at once below 10**8, digit pairs above."""
    rng = np.random.default_rng(0)
    tops = [10 ** i for i in range(1, 20)] + [2 ** 32, 2 ** 40, 2 ** 63, 2 ** 64]
    edges = [u for top in tops for u in (top - 1, top, top + 1) if 1 <= u < 2 ** 64]
    values = np.array(edges + [int(u) for top in tops for u in rng.integers(1, min(top, 2 ** 63), 50)], np.uint64)
    assert _meshtext.format_index_line(values) == "".join(f" {u}" for u in values.tolist()).encode()


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.floats(width=32, allow_nan=False,
                                                                                allow_infinity=False),
                min_size=1, max_size=50),
       st.integers(1, 9))
def test_format_g_matches_python_on_any_floats(values, precision):
    assert format_g(np.array(values, np.float64), precision) == [f"%.{precision}g" % value for value in values]


def test_writer_benchmark_runs(capsys):
    """benchmarks/writer_speed.py (no timing asserted: it must run and find the files identical)."""
    from benchmarks import writer_speed

    assert writer_speed.main(["--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert "byte-identical" in out and "DIFFER" not in out
