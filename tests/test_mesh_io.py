"""runtime.mesh_io.write_obj formats with numpy: the files must be byte for byte what the former
writer (Python's % formatting, kept here as the reference) wrote."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.errors import InputError
from runtime import mesh_io
from runtime.mesh_io import format_g, write_obj

N_RELEASE = 53215


def reference_obj(path: Path, vertices, triangles, colors=None) -> bytes:
    """The former write_obj's text (its format strings define the bytes)."""
    v = np.asarray(vertices)
    t = np.asarray(triangles).astype(np.int64)
    if colors is None:
        vals = v.astype(np.float64)
        line = "v %.9g %.9g %.9g\n"
    else:
        c = np.asarray(colors)
        c = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else np.clip(c.astype(np.float64), 0.0, 1.0)
        vals = np.hstack([v.astype(np.float64), c])
        line = "v %.9g %.9g %.9g %.6g %.6g %.6g\n"
    body = (line * v.shape[0]) % tuple(vals.ravel().tolist())
    faces = ("f %d %d %d\n" * t.shape[0]) % tuple((t + 1).ravel().tolist())
    return (body + faces).encode("ascii")


def awkward_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mesh-like float32 values mixed with what formatting gets wrong first: zeros of both signs,
    exact halves (ties), powers of ten and their neighbours, tiny and huge magnitudes, subnormals."""
    special = np.array([0.0, -0.0, 0.5, -0.5, 1.5, 2.5, 0.125, 1e-4, 9.99999e-5, 1e-5, 1e9, 999999999.5,
                        100000000.5, 9.9999999996, 1e15, 1e22, 1e30, 1e31, 1e-14, 1e-15, 1e-300, 5e-324,
                        1.7976931348623157e308, 123456789.0, 1234567890.0, 0.1, 1 / 3])
    parts = [(rng.standard_normal(n) * 60).astype(np.float32),
             (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 12, n)).astype(np.float32),
             rng.standard_normal(n) * 10.0 ** rng.integers(-320, 300, n),
             rng.integers(-2 ** 20, 2 ** 20, n) * 2.0 ** rng.integers(-40, 20, n),
             np.nextafter(10.0 ** rng.integers(-6, 12, n), rng.choice([-np.inf, np.inf], n)),
             np.resize(np.concatenate([special, -special]), n)]
    values = np.concatenate([p.astype(np.float64) for p in parts])
    return rng.permutation(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_write_obj_is_byte_identical_to_the_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    values = awkward_values(rng, 20000)
    v = values[:len(values) // 3 * 3].reshape(-1, 3)
    t = rng.integers(0, len(v), (2 * len(v), 3))
    for colors in (None, rng.random((len(v), 3)), rng.integers(0, 256, (len(v), 3)).astype(np.uint8),
                   np.where(rng.random((len(v), 3)) < 0.3, rng.choice([0.0, -0.0, 1.0, 0.5, 1.5, -2.0], (len(v), 3)),
                            rng.random((len(v), 3)))):
        path = write_obj(tmp_path / "m.obj", v, t, colors)
        assert path.read_bytes() == reference_obj(path, v, t, colors)


def test_release_sized_meshes_are_byte_identical(tmp_path):
    rng = np.random.default_rng(7)
    t = rng.integers(0, N_RELEASE, (105840, 3)).astype(np.int32)
    for v in ((rng.standard_normal((N_RELEASE, 3)) * 1e5).astype(np.float32),  # benchmarks/writer_speed.py's mesh
              (rng.standard_normal((N_RELEASE, 3)) * 0.1).astype(np.float32),
              rng.standard_normal((N_RELEASE, 3)) * 100):  # float64 (full 53-bit mantissas)
        for colors in (None, rng.random((N_RELEASE, 3)).astype(np.float32)):
            path = write_obj(tmp_path / "m.obj", v, t, colors)
            assert path.read_bytes() == reference_obj(path, v, t, colors)


def test_edge_shapes(tmp_path):
    for v, t in ((np.zeros((0, 3)), np.zeros((0, 3), np.int64)), (np.zeros((1, 3)), np.zeros((0, 3), np.int64)),
                 (np.array([[1, 2, 3]], np.int16), np.zeros((1, 3), np.uint8)),
                 (np.ones((10, 3), bool), np.full((1, 3), 9))):
        path = write_obj(tmp_path / "m.obj", v, t)
        assert path.read_bytes() == reference_obj(path, v, t)


def test_nan_and_bad_shapes_are_refused(tmp_path):
    v = np.zeros((3, 3))
    v[1, 1] = np.nan
    with pytest.raises(InputError, match="^vertices: contains NaN or infinite values$"):
        write_obj(tmp_path / "m.obj", v, np.zeros((1, 3), np.int64))
    with pytest.raises(InputError, match=r"^triangles: index 3 out of range for 3 vertices$"):
        write_obj(tmp_path / "m.obj", np.zeros((3, 3)), np.full((1, 3), 3))
    assert not (tmp_path / "m.obj").exists()


def test_format_g_and_format_int_directly():
    rng = np.random.default_rng(3)
    x = awkward_values(rng, 5000)
    for p in (1, 2, 5, 6, 8, 9):
        got = [row[row != 0].tobytes().decode() for row in format_g(x, p)]
        assert got == [f"%.{p}g" % value for value in x.tolist()], p
    with pytest.raises(ValueError):
        format_g(x, 10)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.floats(width=32, allow_nan=False,
                                                                                allow_infinity=False),
                min_size=1, max_size=50),
       st.sampled_from([6, 9]))
def test_format_g_matches_python_on_any_floats(values, precision):
    x = np.array(values, np.float64)
    got = [row[row != 0].tobytes().decode() for row in format_g(x, precision)]
    assert got == [f"%.{precision}g" % value for value in values]


@pytest.mark.parametrize("top", [1, 9, 10, 99999, 100000, 999999, 10 ** 6, 10 ** 8 + 7, 10 ** 9 - 1, 10 ** 9, 2 ** 40])
def test_face_lines_for_any_index_size(top):
    """Indices below a million come from a table of " n" strings; larger ones are formatted in
    two words, and from 1e9 on by Python (no mesh has that many vertices)."""
    rng = np.random.default_rng(top)
    t = np.concatenate([rng.integers(0, top, (300, 3)), np.array([[0, top - 1, top // 2]])]).astype(np.int64)
    expected = ("f %d %d %d\n" * len(t) % tuple((t + 1).ravel().tolist())).encode("ascii")
    assert mesh_io._obj_face_text(t) == expected


def test_writer_benchmark_runs(capsys):
    """benchmarks/writer_speed.py (no timing asserted: it must run and find the files identical)."""
    from benchmarks import writer_speed

    assert writer_speed.main(["--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert "byte-identical" in out and "DIFFER" not in out
