"""Property-based tests of the Sim3DR Python API (hypothesis, bounded for CI: a few seconds).

Random small meshes (degenerate, off-screen, huge and tiny coordinates, repeated indices)
on small images: the threaded fast path, the plain C++ loop and the numpy reference
(written from ORIGINAL.md section 3) agree bit for bit, the buffers are consistent, light
stays finite in [0, 1], and bad input raises only Sim3DRInputError.
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import Sim3DR  # noqa: E402
from Sim3DR import Sim3DRInputError, get_normal, rasterize, rasterize_buffers  # noqa: E402
from Sim3DR.lighting import light_colors  # noqa: E402
from Sim3DR.reference import (buffers_reference, light_colors_reference,  # noqa: E402
                              normals_reference, rasterize_baseline, rasterize_reference)

# Deterministic (same examples on every run, no example database written); no per-example
# deadline because the numpy reference is slow on a loaded machine.
def ci(max_examples: int) -> settings:
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

F32_MAX = float(np.finfo(np.float32).max)
# The SIMD levels of the C++ kernels this CPU runs (Sim3DR._sim3dr.set_simd_level).
_TOP = Sim3DR._sim3dr.set_simd_level(-1)
LEVELS = sorted({Sim3DR._sim3dr.set_simd_level(level) for level in range(_TOP + 1)})
Sim3DR._sim3dr.set_simd_level(-1)


class simd:
    """``with simd(level):`` the kernels use at most that SIMD level."""

    def __init__(self, level: int) -> None:
        self.level = level

    def __enter__(self):
        Sim3DR._sim3dr.set_simd_level(self.level)

    def __exit__(self, *exc):
        Sim3DR._sim3dr.set_simd_level(-1)

# Mostly on or near the image, sometimes anywhere in float32 range (barycentrics overflow).
coord = st.one_of(st.floats(-6, 40, width=32), st.floats(-6, 40, width=32),
                  st.floats(-F32_MAX, F32_MAX, width=32), st.floats(-2.0**-100, 2.0**-100, width=32))


@st.composite
def meshes(draw, min_tri=0, max_tri=12, max_ver=10):
    nver = draw(st.integers(3, max_ver))
    v = draw(hnp.arrays(np.float32, (nver, 3), elements=coord))
    if draw(st.booleans()):  # snap to the pixel grid: edges through pixel centres
        v = np.round(v)
    ntri = draw(st.integers(min_tri, max_tri))
    t = draw(hnp.arrays(np.int32, (ntri, 3), elements=st.integers(0, nver - 1)))
    return v, t


def assert_all_paths_agree(v, t, c, h, w, dtype, alpha, threads):
    ref = np.zeros((h, w, c.shape[1]), dtype)
    ref_depth = Sim3DR.new_depth_buffer(h, w)
    rasterize_reference(v, t, c, ref, alpha=alpha, depth_buffer=ref_depth)
    base = np.zeros_like(ref)
    base_depth = Sim3DR.new_depth_buffer(h, w)
    rasterize_baseline(v, t, c, base, alpha=alpha, depth_buffer=base_depth)
    fast = np.zeros_like(ref)
    fast_depth = Sim3DR.new_depth_buffer(h, w)
    assert rasterize(v, t, c, fast, alpha=alpha, depth_buffer=fast_depth,
                     num_threads=threads) is fast
    for name, img, d in (("baseline", base, base_depth), ("fast", fast, fast_depth)):
        np.testing.assert_array_equal(img, ref, err_msg=name)
        np.testing.assert_array_equal(d, ref_depth, err_msg=name)
    return ref_depth


@ci(100)
@given(mesh=meshes(), h=st.integers(1, 20), w=st.integers(1, 20),
       channels=st.sampled_from([1, 3, 4, 5]), dtype=st.sampled_from([np.uint8, np.float32]),
       alpha=st.sampled_from([1.0, 0.5, 0.0]), threads=st.integers(1, 4),
       level=st.sampled_from(LEVELS), data=st.data())
def test_fast_baseline_and_reference_agree(mesh, h, w, channels, dtype, alpha, threads, level,
                                           data):
    v, t = mesh
    c = data.draw(hnp.arrays(np.float32, (len(v), channels), elements=st.floats(0, 1, width=32)))
    with np.errstate(all="ignore"), simd(level):
        depth = assert_all_paths_agree(v, t, c, h, w, dtype, alpha, threads)
        d, index = rasterize_buffers(v, t, h, w, num_threads=threads)
        ref_d, ref_index = buffers_reference(v, t, h, w)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_array_equal(d, ref_d)
    # Consistency: a pixel has a triangle exactly where its depth left the initial value.
    drawn = index >= 0
    np.testing.assert_array_equal(drawn, depth != Sim3DR.DEPTH_INIT)
    np.testing.assert_array_equal(d[drawn], depth[drawn])
    assert np.isneginf(d[~drawn]).all()
    assert (index < max(len(t), 1)).all()


@ci(15)
@given(mesh=meshes(min_tri=256, max_tri=300, max_ver=24), h=st.integers(8, 48),
       w=st.integers(1, 24), threads=st.integers(2, 8), level=st.sampled_from(LEVELS))
def test_threaded_path_agrees(mesh, h, w, threads, level):
    """At least 256 triangles and 8 rows: the banded multi-threaded path really runs."""
    v, t = mesh
    c = np.random.default_rng(len(t)).random((len(v), 3), dtype=np.float32)
    with np.errstate(all="ignore"), simd(level):
        assert_all_paths_agree(v, t, c, h, w, np.uint8, 1.0, threads)
        d, index = rasterize_buffers(v, t, h, w, num_threads=threads)
        ref_d, ref_index = buffers_reference(v, t, h, w)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_array_equal(d, ref_d)


@ci(60)
@given(mesh=meshes(min_tri=1), white=st.booleans(), exp=st.integers(0, 9),
       ambient=st.floats(0, 1), directional=st.floats(0, 1), specular=st.floats(0, 1))
# Found by this test: an intensity below float32's smallest subnormal is 0 in C++.
@example(mesh=(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32),
               np.array([[1, 2, 0]], np.int32)),
         white=False, exp=0, ambient=0.0, directional=1.4543756243807447e-307, specular=1.0)
def test_normals_and_light_stay_finite(mesh, white, exp, ambient, directional, specular):
    v, t = mesh
    n = get_normal(v, t)
    length = np.linalg.norm(n.astype(np.float64), axis=1)
    assert np.isfinite(n).all()
    assert np.all((length == 0) | (np.abs(length - 1) < 1e-6))
    with np.errstate(all="ignore"):
        ref_n = normals_reference(v, t)
    finite = np.isfinite(ref_n).all(axis=1)  # the float64 reference overflows past ~1e154
    np.testing.assert_allclose(n[finite], ref_n[finite], atol=1e-6)
    colour = (1.0, 1.0, 1.0) if white else (1.0, 0.5, 0.0)
    params = dict(intensity_ambient=ambient, intensity_directional=directional,
                  intensity_specular=specular, specular_exp=exp, color_directional=colour)
    light = light_colors(v, t, **params)
    assert light.dtype == np.float32 and light.shape == v.shape
    assert np.isfinite(light).all() and light.min() >= 0 and light.max() <= 1
    if white:
        np.testing.assert_array_equal(light[:, 0], light[:, 1])
    with np.errstate(all="ignore"):
        ref = light_colors_reference(v, t, normals=n, **params)
    # C++ directions in double, the reference's in float32: cos differs by ~1e-7.
    np.testing.assert_allclose(light, ref, atol=1e-5)


@ci(40)
@given(mesh=st.one_of(meshes(min_tri=1), meshes(min_tri=256, max_tri=300, max_ver=40)),
       h=st.integers(1, 40), w=st.integers(1, 40), threads=st.integers(1, 8),
       alpha=st.sampled_from([1.0, 0.5]), level=st.sampled_from(LEVELS),
       shared_depth=st.booleans())
def test_render_lit_is_light_colors_then_rasterize(mesh, h, w, threads, alpha, level,
                                                   shared_depth):
    """render_lit's one C++ pass gives the bytes (and depth) of the two steps it replaces."""
    from Sim3DR.lighting import render_lit
    v, t = mesh
    bg = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with np.errstate(all="ignore"):
        ref, ref_depth = bg.copy(), Sim3DR.new_depth_buffer(h, w)
        ref_depth[: h // 2] = 3.0
        depth = ref_depth.copy()
        rasterize_baseline(v, t, light_colors(v, t), ref, alpha=alpha,
                           depth_buffer=ref_depth if shared_depth else None)
        with simd(level):
            out = render_lit(v, t, bg, alpha=alpha, num_threads=threads,
                             depth_buffer=depth if shared_depth else None)
    np.testing.assert_array_equal(out, ref)
    if shared_depth:
        np.testing.assert_array_equal(depth, ref_depth)


def _anything_array():
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    return st.one_of(
        hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_,
                                    np.int8]), shapes,
                   elements=None),
        hnp.arrays(np.float64, shapes, elements=st.floats(allow_nan=True, allow_infinity=True)),
        st.just([[0, 0, 0]] * 3), st.just("abc"), st.none())


@ci(150)
@given(data=st.data())
def test_bad_input_raises_only_our_error(data):
    """Any mix of valid and invalid arguments: a result, or Sim3DRInputError."""
    v = np.array([[0, 0, 1], [6, 0, 1], [0, 6, 1]], np.float32)
    args = dict(vertices=v, triangles=np.array([[0, 1, 2]]), colors=np.ones((3, 3), np.float32),
                image=np.zeros((8, 8, 3), np.uint8))
    kw = {}
    for name in data.draw(st.sets(st.sampled_from(sorted(args) + ["alpha", "num_threads",
                                                                 "depth_buffer"]))):
        if name == "alpha":
            kw[name] = data.draw(st.one_of(st.floats(), st.text(max_size=2), st.none()))
        elif name == "num_threads":
            kw[name] = data.draw(st.one_of(st.integers(-2**40, 2**40), st.floats(),
                                           st.integers(250, 260), st.booleans()))
        else:
            args[name] = data.draw(_anything_array())
    fn = data.draw(st.sampled_from(["rasterize", "buffers", "normal", "light"]))
    with np.errstate(all="ignore"):
        try:
            if fn == "rasterize":
                rasterize(**args, **kw)
            elif fn == "buffers":
                size = data.draw(st.one_of(st.integers(-3, 12), st.floats(-1, 9)))
                rasterize_buffers(args["vertices"], args["triangles"], size, 8,
                                  num_threads=kw.get("num_threads"))
            elif fn == "normal":
                get_normal(args["vertices"], args["triangles"])
            else:
                exp = data.draw(st.one_of(st.integers(-2, 7), st.floats()))
                light_colors(args["vertices"], args["triangles"], specular_exp=exp)
        except Sim3DRInputError:
            pass
