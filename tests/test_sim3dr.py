"""Sim3DR: rasteriser rules, exactness against the numpy reference, normals, errors."""
from __future__ import annotations

import re

import numpy as np
import pytest

import Sim3DR
from Sim3DR import Sim3DRInputError, get_normal, rasterize, rasterize_buffers
from Sim3DR.reference import (buffers_reference, normals_reference, rasterize_baseline,
                              rasterize_reference)
from tests.helpers.data import real_face
from tests.helpers.meshes import dome, draw_native, scatter_mesh


def face_in_image(size: int):
    """Real face in image coordinates filling a size x size image (y down, z near)."""
    v, t = real_face()
    s = (size - 1) * 0.9
    img = np.empty_like(v)
    img[:, 0] = v[:, 0] * s + size * 0.05
    img[:, 1] = (1 - v[:, 1]) * s + size * 0.05
    img[:, 2] = v[:, 2] * s
    return img, t


def draw_all(v, t, c, h, w, dtype=np.uint8, alpha=1.0, fill=0, threads=(1, 2, 3)):
    """Render with the reference, the baseline and the fast path at several thread
    counts; assert all images and depth buffers are identical; return the reference."""
    ch = c.shape[1]
    ref_img = np.full((h, w, ch), fill, dtype=dtype)
    ref_depth = Sim3DR.new_depth_buffer(h, w)
    rasterize_reference(v, t, c, ref_img, alpha=alpha, depth_buffer=ref_depth)
    outs = []
    base = np.full((h, w, ch), fill, dtype=dtype)
    d = Sim3DR.new_depth_buffer(h, w)
    rasterize_baseline(v, t, c, base, alpha=alpha, depth_buffer=d)
    outs.append(("baseline", base, d))
    for n in threads:
        img = np.full((h, w, ch), fill, dtype=dtype)
        d = Sim3DR.new_depth_buffer(h, w)
        assert rasterize(v, t, c, img, alpha=alpha, depth_buffer=d, num_threads=n) is img
        outs.append((f"{n} threads", img, d))
    for name, img, d in outs:
        np.testing.assert_array_equal(img, ref_img, err_msg=name)
        np.testing.assert_array_equal(d, ref_depth, err_msg=name)
    return ref_img, ref_depth


def one_tri(p, z=(1.0, 1.0, 1.0)):
    v = np.array([[p[0][0], p[0][1], z[0]], [p[1][0], p[1][1], z[1]],
                  [p[2][0], p[2][1], z[2]]], np.float32)
    return v, np.array([[0, 1, 2]], np.int32)


# ------------------------------------------------------------------------ coverage rules


def test_right_triangle_half_open_coverage():
    # p0=(0,0), p1=(4,0), p2=(0,4): u = y/4, v = x/4; inside iff x, y >= 0 and x + y < 4.
    v, t = one_tri([(0, 0), (4, 0), (0, 4)])
    img, _ = draw_all(v, t, np.ones((3, 1), np.float32), 8, 8)
    ys, xs = np.mgrid[0:8, 0:8]
    expected = (xs + ys < 4).astype(np.uint8) * 255
    np.testing.assert_array_equal(img[:, :, 0], expected)
    assert img[0, 0, 0] == 255 and img[0, 3, 0] == 255 and img[3, 0, 0] == 255
    assert img[0, 4, 0] == 0 and img[2, 2, 0] == 0  # on the hypotenuse: excluded


def test_shared_diagonal_belongs_to_neither_triangle():
    # The u + v < 1 rule excludes the far edge of both halves of the square.
    v = np.array([[0, 0, 1], [4, 0, 1], [0, 4, 1], [4, 4, 1]], np.float32)
    t = np.array([[0, 1, 2], [3, 2, 1]], np.int32)
    depth, index = rasterize_buffers(v, t, 6, 6)
    ys, xs = np.mgrid[0:6, 0:6]
    inside = (xs <= 4) & (ys <= 4)
    np.testing.assert_array_equal(index[inside & (xs + ys < 4)], 0)
    np.testing.assert_array_equal(index[inside & (xs + ys > 4)], 1)
    np.testing.assert_array_equal(index[(xs + ys == 4) | ~inside], -1)
    assert np.isneginf(depth[index < 0]).all() and (depth[index >= 0] == 1).all()
    ref_depth, ref_index = buffers_reference(v, t, 6, 6)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_array_equal(depth, ref_depth)


def test_fractional_vertices_use_integer_sample_positions():
    v, t = one_tri([(0.5, 0.5), (5.5, 0.5), (0.5, 5.5)])
    img, _ = draw_all(v, t, np.ones((3, 1), np.float32), 8, 8)
    ys, xs = np.mgrid[0:8, 0:8]
    expected = (xs >= 1) & (ys >= 1) & ((xs - 0.5) + (ys - 0.5) < 5)
    np.testing.assert_array_equal(img[:, :, 0] > 0, expected)


def test_barycentric_colour_and_depth_interpolation():
    v, t = one_tri([(0, 0), (4, 0), (0, 4)], z=(0.0, 4.0, 8.0))
    c = np.array([[0.0], [1.0], [0.5]], np.float32)
    img, depth = draw_all(v, t, c, 6, 6, dtype=np.float32)
    # pixel (x=1, y=2): v = 1/4 (p1), u = 2/4 (p2), w0 = 1/4
    assert img[2, 1, 0] == pytest.approx(0.25 * 1.0 + 0.5 * 0.5)
    assert depth[2, 1] == pytest.approx(0.25 * 4 + 0.5 * 8)


@pytest.mark.parametrize("first_near", [True, False])
def test_z_order_both_orders(first_near):
    near, far = 5.0, 1.0
    a, _ = one_tri([(0, 0), (8, 0), (0, 8)], z=(near,) * 3 if first_near else (far,) * 3)
    b, _ = one_tri([(1, 1), (9, 1), (1, 9)], z=(far,) * 3 if first_near else (near,) * 3)
    v = np.vstack([a, b])
    t = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    c = np.array([[1.0]] * 3 + [[0.5]] * 3, np.float32)
    img, depth = draw_all(v, t, c, 10, 10)
    # pixel (2, 2) is inside both: the nearer triangle wins whatever the order
    assert img[2, 2, 0] == (255 if first_near else 127)
    assert depth[2, 2] == near
    _, index = rasterize_buffers(v, t, 10, 10)
    assert index[2, 2] == (0 if first_near else 1)


def test_equal_depth_tie_goes_to_earlier_triangle():
    v, _ = one_tri([(0, 0), (6, 0), (0, 6)], z=(2.0, 2.0, 2.0))
    v = np.vstack([v, v])
    t = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    c = np.array([[0.2]] * 3 + [[0.8]] * 3, np.float32)
    img, _ = draw_all(v, t, c, 8, 8)
    assert img[1, 1, 0] in (50, 51)  # colour 0.2 (interpolation rounding), not 0.8
    _, index = rasterize_buffers(v, t, 8, 8)
    assert set(np.unique(index)) == {-1, 0}


@pytest.mark.parametrize("pts", [
    [(2, 2), (2, 2), (2, 2)],          # a point
    [(1, 1), (3, 3), (5, 5)],          # collinear
    [(0, 2), (6, 2), (3, 2)],          # horizontal line
    [(1.0, 1.0), (1.0, 1.0), (4.0, 1.0)],  # two equal vertices
])
def test_degenerate_triangles_are_skipped(pts):
    # The release paints the whole bounding box of such triangles; we draw nothing.
    v, t = one_tri(pts)
    img, depth = draw_all(v, t, np.ones((3, 3), np.float32), 8, 8)
    assert not img.any() and (depth == Sim3DR.DEPTH_INIT).all()


def test_off_screen_and_partially_off_screen():
    v = np.array([[-20, -20, 1], [-10, -20, 1], [-20, -10, 1],      # fully off (left/up)
                  [30, 2, 1], [40, 2, 1], [30, 6, 1],               # fully off (right)
                  [-5, -5, 2], [12, -3, 1], [-4, 14, 3],            # partially off
                  [-1e6, 3, 1], [1e6, 4, 1], [0, 5e5, 1]],          # huge
                 np.float32)
    t = np.arange(12, dtype=np.int32).reshape(4, 3)
    c = np.random.default_rng(3).random((12, 3), dtype=np.float32)
    img, _ = draw_all(v, t[:2], c, 10, 12)
    assert not img.any()
    img, _ = draw_all(v, t[2:3], c, 10, 12)
    assert img.any(axis=2).mean() > 0.3
    draw_all(v, t, c, 10, 12)


def test_alpha_blending_uint8_and_float():
    v, t = one_tri([(0, 0), (6, 0), (0, 6)])
    c = np.ones((3, 3), np.float32)
    img, _ = draw_all(v, t, c, 8, 8, alpha=0.5, fill=100)
    assert img[1, 1, 0] == 177  # trunc(0.5 * 100 + 0.5 * 255)
    assert img[7, 7, 0] == 100
    img, _ = draw_all(v, t, c * 0.25, 8, 8, dtype=np.float32, alpha=0.25, fill=2.0)
    assert img[1, 1, 1] == pytest.approx(0.75 * 2.0 + 0.25 * 0.25)
    img, _ = draw_all(v, t, c, 8, 8, alpha=0.0, fill=42)
    assert (img == 42).all()


def test_uint8_clamps_out_of_range_colours():
    v, t = one_tri([(0, 0), (6, 0), (0, 6)])
    c = np.array([[2.0, -1.0, 0.5]] * 3, np.float32)
    img, _ = draw_all(v, t, c, 8, 8)
    assert tuple(img[1, 1]) == (255, 0, 127)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_random_meshes_match_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(8, 40)), int(rng.integers(8, 40))
    n, m = 60, 300  # >= 256 triangles: the threaded path is used
    v = np.column_stack([rng.uniform(-6, w + 6, n), rng.uniform(-6, h + 6, n),
                         rng.uniform(-10, 10, n)]).astype(np.float32)
    if seed % 2:
        v[:, :2] = np.round(v[:, :2])  # integer positions: many exact edge hits
        v[:, 2] = np.round(v[:, 2] / 4)  # and many depth ties
    t = rng.integers(0, n, (m, 3)).astype(np.int32)
    c = rng.random((n, 3), dtype=np.float32)
    draw_all(v, t, c, h, w, dtype=dtype, alpha=[1.0, 0.6][seed % 2], fill=17)
    depth, index = rasterize_buffers(v, t, h, w, num_threads=2)
    ref_depth, ref_index = buffers_reference(v, t, h, w)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_array_equal(depth, ref_depth)


def test_small_tight_mesh_matches_reference():
    rng = np.random.default_rng(11)
    ys, xs = np.mgrid[0:20, 0:20]
    v = np.column_stack([xs.ravel() * 1.37 + 0.3, ys.ravel() * 1.21 - 0.2,
                         rng.random(400)]).astype(np.float32)
    q = (ys[:-1, :-1] * 20 + xs[:-1, :-1]).ravel()
    t = np.concatenate([np.stack([q, q + 1, q + 20], 1), np.stack([q + 1, q + 21, q + 20], 1)])
    c = rng.random((400, 4), dtype=np.float32)
    draw_all(v, t.astype(np.int32), c, 24, 28)


def test_shared_depth_buffer_between_meshes():
    a, t = one_tri([(0, 0), (8, 0), (0, 8)], z=(1.0, 1.0, 1.0))
    b, _ = one_tri([(0, 0), (8, 0), (0, 8)], z=(3.0, 3.0, 3.0))
    img = np.zeros((9, 9, 1), np.uint8)
    depth = Sim3DR.new_depth_buffer(9, 9)
    rasterize(b, t, np.full((3, 1), 0.5, np.float32), img, depth_buffer=depth)
    rasterize(a, t, np.ones((3, 1), np.float32), img, depth_buffer=depth)
    assert img[1, 1, 0] == 127 and depth[1, 1] == 3.0  # farther mesh hidden
    d2, index = rasterize_buffers(a, t, 9, 9, depth_buffer=depth)
    assert (index == -1).all() and np.isneginf(d2).all()


def test_empty_inputs():
    img = np.zeros((4, 4, 3), np.uint8)
    v = np.zeros((0, 3), np.float32)
    t = np.zeros((0, 3), np.int32)
    assert rasterize(v, t, np.zeros((0, 3), np.float32), img) is img and not img.any()
    depth, index = rasterize_buffers(v, t, 4, 4, background=0.0)
    assert (index == -1).all() and (depth == 0).all()
    assert get_normal(v, t).shape == (0, 3)


# ------------------------------------------------------------------------ normals


def test_normals_flat_square():
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    t = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    np.testing.assert_allclose(get_normal(v, t), [[0, 0, 1]] * 4, atol=1e-7)
    np.testing.assert_allclose(get_normal(v, t[:, ::-1]), [[0, 0, -1]] * 4, atol=1e-7)


def test_normals_tetrahedron_and_zero_normals():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [5, 5, 5]], np.float32)
    # outward faces of the corner tetrahedron; vertex 4 is unused
    t = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
    n = get_normal(v, t)
    s = 1 / np.sqrt(3)
    # corner: faces -z, -y, -x (area 1/2 each) -> (-1,-1,-1)/sqrt3
    np.testing.assert_allclose(n[0], [-s, -s, -s], atol=1e-6)
    # vertex 1: cross products (0,0,-1) + (0,-1,0) + slanted face (1,1,1) = (1,0,0)
    e = np.array([0.0, 0.0, -1.0]) + np.array([0.0, -1.0, 0.0]) + np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(n[1], e / np.linalg.norm(e), atol=1e-6)
    assert (n[4] == 0).all() and np.isfinite(n).all()
    np.testing.assert_allclose(n, normals_reference(v, t), atol=1e-6)


def test_normals_are_area_weighted():
    # Vertex 0 is shared by a large triangle in the z=0 plane (normal +z, area 8) and a
    # small one in the x=0 plane (normal +x, area 0.5): the sum is (1, 0, 16).
    v = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    t = np.array([[0, 1, 2], [0, 3, 4]], np.int32)
    n = get_normal(v, t)
    np.testing.assert_allclose(n[0], np.array([1, 0, 16]) / np.sqrt(257), atol=1e-6)
    np.testing.assert_allclose(n[1], [0, 0, 1], atol=1e-7)
    np.testing.assert_allclose(n[3], [1, 0, 0], atol=1e-7)


def test_normals_degenerate_triangle_only_vertex_is_zero():
    v = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]], np.float32)
    n = get_normal(v, np.array([[0, 1, 2]], np.int32))
    assert (n == 0).all()


def test_normals_real_face_match_reference():
    v, t = real_face()
    np.testing.assert_allclose(get_normal(v, t), normals_reference(v, t), atol=1e-5)


# ------------------------------------------------------------------------ errors


def _ok():
    v, t = one_tri([(0, 0), (4, 0), (0, 4)])
    return v, t, np.ones((3, 3), np.float32), np.zeros((6, 6, 3), np.uint8)


def full(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(vertices=np.zeros((3, 2))),
     "vertices: expected an (N, 3) array, got shape (3, 2)"),
    (lambda a: a.update(vertices=np.array([[0, 0, "a"]] * 3, dtype=object)),
     "vertices: expected a numeric array, got dtype object"),
    (lambda a: a["vertices"].__setitem__((1, 2), np.nan),
     "vertices: contains NaN or infinite values"),
    (lambda a: a["vertices"].__setitem__((0, 0), np.inf),
     "vertices: contains NaN or infinite values"),
    (lambda a: a.update(triangles=np.array([[0, 1, 3]])),
     "triangles: index 3 out of range for 3 vertices"),
    (lambda a: a.update(triangles=np.array([[0, -1, 2]])),
     "triangles: index -1 out of range for 3 vertices"),
    (lambda a: a.update(triangles=np.array([[0.0, 1.0, 2.0]])),
     "triangles: expected integer indices, got dtype float64"),
    (lambda a: a.update(triangles=np.array([0, 1, 2])),
     "triangles: expected an (M, 3) array, got shape (3,)"),
    (lambda a: a.update(colors=np.ones((4, 3))),
     "colors: expected shape (3, 3) (one row per vertex, one column per image channel), "
     "got (4, 3)"),
    (lambda a: a.update(colors=np.ones((3, 1))),
     "colors: expected shape (3, 3) (one row per vertex, one column per image channel), "
     "got (3, 1)"),
    (lambda a: a["colors"].__setitem__((0, 0), np.nan),
     "colors: contains NaN or infinite values"),
    (lambda a: a.update(image=np.zeros((6, 6), np.uint8)),
     "image: expected an (H, W, C) array, got shape (6, 6)"),
    (lambda a: a.update(image=np.zeros((6, 6, 3))),
     "image: expected dtype uint8 or float32, got float64"),
    (lambda a: a.update(image=np.zeros((6, 12, 3), np.uint8)[:, ::2]),
     "image: must be C-contiguous (it is drawn on in place)"),
    (lambda a: a.update(image=[[[0, 0, 0]]]),
     "image: expected a numpy array, got list"),
    (lambda a: a.update(alpha=1.5), "alpha: expected a number in [0, 1], got 1.5"),
    (lambda a: a.update(alpha=float("nan")), "alpha: expected a number in [0, 1], got nan"),
    (lambda a: a.update(depth_buffer=np.zeros((6, 5), np.float32)),
     "depth_buffer: expected a float32 array of shape (6, 6), got float32 with shape (6, 5)"),
    (lambda a: a.update(num_threads=0), "num_threads: expected an integer from 1 to 256, got 0"),
    (lambda a: a.update(num_threads=-3), "num_threads: expected an integer from 1 to 256, got -3"),
    (lambda a: a.update(num_threads=257),
     "num_threads: expected an integer from 1 to 256, got 257"),
    (lambda a: a.update(num_threads=2**31 - 1),
     "num_threads: expected an integer from 1 to 256, got 2147483647"),
    (lambda a: a.update(num_threads=2.0), "num_threads: expected an integer from 1 to 256, got 2.0"),
    (lambda a: a.update(num_threads=True),
     "num_threads: expected an integer from 1 to 256, got True"),
])
def test_rasterize_errors(change, message):
    v, t, c, img = _ok()
    args = dict(vertices=v, triangles=t, colors=c, image=img)
    change(args)
    with pytest.raises(Sim3DRInputError, match=full(message)):
        rasterize(**args)


def test_readonly_image_and_error_class():
    v, t, c, img = _ok()
    img.flags.writeable = False
    with pytest.raises(ValueError, match=full("image: must be writable (it is drawn on in place)")):
        rasterize(v, t, c, img)
    assert issubclass(Sim3DRInputError, ValueError)


def test_buffer_and_normal_errors(monkeypatch):
    v, t, _, _ = _ok()
    with pytest.raises(Sim3DRInputError, match=full("height: expected a positive integer, got 0")):
        rasterize_buffers(v, t, 0, 4)
    with pytest.raises(Sim3DRInputError, match=full("width: expected a positive integer, got 2.5")):
        rasterize_buffers(v, t, 4, 2.5)
    with pytest.raises(Sim3DRInputError,
                       match=full("triangles: index 7 out of range for 3 vertices")):
        get_normal(v, np.array([[0, 7, 1]], np.int64))
    for env in ("two", "0", "-1", "257", "2147483647", "1.5"):
        monkeypatch.setenv("SIM3DR_NUM_THREADS", env)
        with pytest.raises(Sim3DRInputError, match=full(
                f"SIM3DR_NUM_THREADS: expected an integer from 1 to 256, got {env!r}")):
            rasterize_buffers(v, t, 4, 4)


def test_dtype_casts_are_accepted():
    v, t, c, img = _ok()
    ref = rasterize(v, t, c, img.copy())
    out = rasterize(v.astype(np.float64), t.astype(np.uint64), c.astype(np.float64),
                    img.copy())
    np.testing.assert_array_equal(out, ref)
    out = rasterize(np.asfortranarray(v.astype(np.int64)), t.astype(np.int16), c, img.copy())
    np.testing.assert_array_equal(out, rasterize(v.astype(np.int64), t, c, img.copy()))


# ------------------------------------------------------------------------ threads, real data


def test_thread_count_resolution(monkeypatch):
    monkeypatch.delenv("SIM3DR_NUM_THREADS", raising=False)
    assert 1 <= Sim3DR.resolve_num_threads() <= Sim3DR.MAX_THREADS == 256
    assert Sim3DR.resolve_num_threads(3) == 3
    assert Sim3DR.resolve_num_threads(256) == 256
    monkeypatch.setenv("SIM3DR_NUM_THREADS", " 5 ")
    assert Sim3DR.resolve_num_threads() == 5
    assert Sim3DR.resolve_num_threads(2) == 2


def test_threads_are_limited_to_bands_and_cap():
    v, t, c = scatter_mesh(16, 64)
    base, base_d, used = draw_native(v, t, c, 16, 64, 1)
    assert used == 1
    img, d, used = draw_native(v, t, c, 16, 64, 256)
    assert used == 4  # 16 rows: four bands of the minimum 4 rows
    np.testing.assert_array_equal(img, base)
    np.testing.assert_array_equal(d, base_d)
    # Below the Python layer's check, the C++ core lowers absurd requests itself.
    v, t, c = scatter_mesh(4096, 8)
    base, base_d, _ = draw_native(v, t, c, 4096, 8, 1)
    img, d, used = draw_native(v, t, c, 4096, 8, 2**31 - 1)
    assert used == 256
    np.testing.assert_array_equal(img, base)
    np.testing.assert_array_equal(d, base_d)


_TALL_CHILD = r"""
import resource, sys
import numpy as np
sys.path.insert(0, {root!r})
import Sim3DR
from tests.helpers.meshes import draw_native, scatter_mesh
v, t, c = scatter_mesh(65536, 1)
draw_native(v, t, c, 65536, 1, 1)  # the image and buffers themselves
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_, _, used = draw_native(v, t, c, 65536, 1, 256)
print(used, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_most_threads_on_a_tall_image_stay_small():
    """256 threads on a 65536x1 image: 2048 bands of 32 rows. The per-(chunk, band) lists
    are capped at 65536 (1.5 MB); before, 512 threads here took 250 MB to 1.7 GB."""
    import subprocess
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", _TALL_CHILD.format(root=root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    used, growth_mb = map(int, proc.stdout.split())
    assert used == 256
    assert growth_mb < 32  # measured 8 MB (thread stacks touched, lists, allocator)


@pytest.fixture
def thread_start_limit():
    yield Sim3DR._sim3dr.set_thread_start_limit
    Sim3DR._sim3dr.set_thread_start_limit(-1)


@pytest.mark.parametrize("limit", [0, 1, 2])
def test_refused_thread_starts_fall_back(thread_start_limit, limit):
    v, t, c = scatter_mesh(64, 64)
    base, base_d, _ = draw_native(v, t, c, 64, 64, 1)
    thread_start_limit(limit)
    img, d, used = draw_native(v, t, c, 64, 64, 6)
    assert used == limit + 1  # the calling thread plus those the "OS" allowed
    np.testing.assert_array_equal(img, base)
    np.testing.assert_array_equal(d, base_d)
    index = np.full((64, 64), -1, np.int32)
    d2 = Sim3DR.new_depth_buffer(64, 64)
    assert Sim3DR._sim3dr.rasterize_index(v, t, d2, index, 6) == limit + 1
    ref_depth, ref_index = rasterize_buffers(v, t, 64, 64, num_threads=1)
    np.testing.assert_array_equal(np.where(index >= 0, d2, -np.inf), ref_depth)
    np.testing.assert_array_equal(index, ref_index)


# Runs in a child under a tight address-space limit: the OS then refuses new threads
# (no room for their stacks) and C++ allocations (std::bad_alloc). Before `except +`
# and the fallback, both ended in "terminate called ..." and SIGABRT.
_LIMITED_CHILD = r"""
import re, resource, sys
import numpy as np
sys.path.insert(0, {root!r})
import Sim3DR
from tests.helpers.meshes import draw_native, scatter_mesh

def limit_address_space(extra_mb):
    vm = int(re.search(r"VmSize:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (extra_mb << 20), resource.RLIM_INFINITY))

v, t, c = scatter_mesh(64, 64)
base, _, _ = draw_native(v, t, c, 64, 64, 1)
big = np.zeros((4_000_000, 3), np.float32)  # get_normal's C++ sums: 96 MB of doubles
tri = np.array([[0, 1, 2]], np.int32)
limit_address_space(4)  # less than one 8 MB thread stack
img, _, used = draw_native(v, t, c, 64, 64, 8)
print("threads", used, "equal", bool((img == base).all()))
img2 = Sim3DR.rasterize(v, t, c, np.zeros((64, 64, 3), np.uint8), num_threads=8)
print("api equal", bool((img2 == base).all()))
limit_address_space(70)  # room for the checks (12 MB) and the result (48 MB) only
try:
    Sim3DR.get_normal(big, tri)
except Sim3DR.Sim3DRError as exc:
    print("error", type(exc).__name__, exc)
"""


def test_os_refusals_raise_or_fall_back_without_abort():
    import subprocess
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", _LIMITED_CHILD.format(root=root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "threads 1 equal True", "api equal True",
        "error Sim3DRError get_normal: out of memory"], proc.stderr


@pytest.mark.parametrize("size", [120, 512])
def test_real_face_fast_equals_baseline(size, monkeypatch):
    v, t = face_in_image(size)
    c = np.random.default_rng(0).random((len(v), 3), dtype=np.float32)
    base = np.zeros((size, size, 3), np.uint8)
    base_depth = Sim3DR.new_depth_buffer(size, size)
    rasterize_baseline(v, t, c, base, depth_buffer=base_depth)
    assert 0.5 < base.any(axis=2).mean() < 0.9
    for n in (1, 2, 4, 7):
        img = np.zeros_like(base)
        d = Sim3DR.new_depth_buffer(size, size)
        rasterize(v, t, c, img, depth_buffer=d, num_threads=n)
        np.testing.assert_array_equal(img, base, err_msg=f"{n} threads")
        np.testing.assert_array_equal(d, base_depth, err_msg=f"{n} threads")
    monkeypatch.setenv("SIM3DR_NUM_THREADS", "3")
    img = rasterize(v, t, c, np.zeros_like(base))
    np.testing.assert_array_equal(img, base)
    fimg = np.zeros((size, size, 3), np.float32)
    fbase = np.zeros_like(fimg)
    rasterize(v, t, c, fimg, alpha=0.7, num_threads=2)
    rasterize_baseline(v, t, c, fbase, alpha=0.7)
    np.testing.assert_array_equal(fimg, fbase)
    depth, index = rasterize_buffers(v, t, size, size, num_threads=2)
    np.testing.assert_array_equal(np.where(index >= 0, depth, Sim3DR.DEPTH_INIT), base_depth)


@pytest.mark.slow
def test_real_face_small_render_matches_reference():
    v, t = face_in_image(48)
    c = np.random.default_rng(1).random((len(v), 3), dtype=np.float32)
    draw_all(v, t, c, 48, 48, threads=(2,))


# ------------------------------------------------------------------------ one-pass lit render
# render_lit computes normals, light and pixels in one C++ pass with a worker pool kept
# between calls, SIMD kernels chosen at run time and, for alpha 1, each pixel coloured once
# from its last winner. These tests hold every such path to the plain arithmetic, bit for
# bit: the numpy emulations below repeat the C++ operations in the same order (float64
# where the C++ uses double, float32 elsewhere), and the plain C++ loop draws the pixels.


def normals_exact(v, t):
    """get_normal's arithmetic: (v1 - v0) x (v2 - v0) in float64 from the float32 corners,
    summed into the corners in triangle order (ufunc.at adds in index order), divided by
    the length; zero (or non-finite) sums give 0."""
    v64 = v.astype(np.float64)
    a, b, c = v64[t[:, 0]], v64[t[:, 1]], v64[t[:, 2]]
    e1, e2 = b - a, c - a
    n = np.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1],
                  e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                  e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], axis=1)
    acc = np.zeros_like(v64)
    np.add.at(acc, t.reshape(-1), np.repeat(n, 3, axis=0))
    length = np.sqrt(acc[:, 0] * acc[:, 0] + acc[:, 1] * acc[:, 1] + acc[:, 2] * acc[:, 2])
    ok = (length > 0) & np.isfinite(length)
    with np.errstate(all="ignore"):
        out = np.where(ok[:, None], acc / length[:, None], 0.0)
    return out.astype(np.float32)


def light_exact(v, normals, intensity_ambient=0.3, intensity_directional=0.6,
                intensity_specular=0.1, specular_exp=5, color_ambient=(1.0, 1.0, 1.0),
                color_directional=(1.0, 1.0, 1.0), light_pos=(0.0, 0.0, 5.0),
                view_pos=(0.0, 0.0, 5.0)):
    """light_vertices' arithmetic for whole exponents 0..16 (see Sim3DR/src/lighting.cpp)."""
    f32, f64 = np.float32, np.float64
    amb, dirl, spec_i = f32(intensity_ambient), f32(intensity_directional), f32(intensity_specular)
    ca, cd = np.asarray(color_ambient, f32), np.asarray(color_directional, f32)

    def clip01(x):
        return np.minimum(np.maximum(x, f32(0)), f32(1))

    out = np.tile(amb * ca if amb > 0 else np.zeros(3, f32), (len(v), 1)).astype(f32)
    if not dirl > 0:
        return clip01(out)
    lo, hi = v.min(axis=0).astype(f64), v.max(axis=0).astype(f64)
    top = max(0.0, *(hi - lo))
    scale = 2.0 / top if top > 0 else 2.0
    vn = (v.astype(f64) - lo) * scale - (hi - lo) * scale / 2.0

    def unit(p):
        d = np.asarray(p, f32).astype(f64) - vn
        n = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])
        with np.errstate(divide="ignore"):
            inv = np.where(n > 0, 1.0 / n, 0.0)
        return (d * inv[:, None]).astype(f32)

    d, e = unit(light_pos), unit(view_pos)
    nr = normals
    cos = nr[:, 0] * d[:, 0] + nr[:, 1] * d[:, 1] + nr[:, 2] * d[:, 2]
    out = out + dirl * (cd[None, :] * clip01(cos)[:, None])
    if spec_i > 0:
        total = np.zeros(len(v), f32)
        for k in range(3):
            r = e[:, k] * ((f32(2) * cos) * nr[:, k] - d[:, k])
            q = np.ones_like(r) if specular_exp == 0 else r
            for _ in range(int(specular_exp) - 1):
                q = q * r
            total = total + q
        s = np.where(cos != 0, clip01(total), f32(0))
        out = out + (spec_i * cd)[None, :] * s[:, None]
    return clip01(out)


@pytest.fixture
def simd_level():
    """Sets the widest SIMD level of the kernels (restored afterwards); returns the level in
    effect."""
    yield Sim3DR._sim3dr.set_simd_level
    Sim3DR._sim3dr.set_simd_level(-1)


def simd_levels():
    top = Sim3DR._sim3dr.set_simd_level(-1)
    return sorted({Sim3DR._sim3dr.set_simd_level(level) for level in range(top + 1)})


def test_simd_levels_are_clamped(simd_level):
    top = simd_level(-1)
    assert top in (0, 1, 2, 3)
    assert simd_level(99) == top
    assert simd_level(0) == min(simd_levels())


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_normals_and_light_bit_exact_at_any_thread_count(threads, monkeypatch):
    """Vertex ranges sum their triangles in triangle order: the same bits as one thread."""
    from Sim3DR.lighting import light_colors
    monkeypatch.setenv("SIM3DR_NUM_THREADS", str(threads))
    v, t = dome()
    n = normals_exact(v, t)
    np.testing.assert_array_equal(get_normal(v, t), n)
    np.testing.assert_array_equal(light_colors(v, t), light_exact(v, n))
    np.testing.assert_array_equal(light_colors(v, t, normals=n), light_exact(v, n))
    for params in (dict(specular_exp=0), dict(specular_exp=1, color_directional=(1, 0.5, 0.25)),
                   dict(specular_exp=16, light_pos=(3, -2, 1), view_pos=(-1, 2, 9)),
                   dict(intensity_specular=0.0), dict(intensity_directional=0.0),
                   dict(intensity_ambient=0.0, color_ambient=(0.2, 0.4, 0.6))):
        np.testing.assert_array_equal(light_colors(v, t, **params), light_exact(v, n, **params),
                                      err_msg=str(params))


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_render_lit_is_the_two_steps_bit_for_bit(threads, simd_level):
    """render_lit = light (the emulation) + the plain loop, for every thread count and SIMD
    level, with and without a depth buffer, alpha 1 (deferred) and 0.6 (immediate)."""
    from Sim3DR.lighting import render_lit
    v, t = dome()
    light = light_exact(v, normals_exact(v, t))
    bg = np.random.default_rng(5).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    for alpha in (1.0, 0.6):
        ref = bg.copy()
        ref_depth = Sim3DR.new_depth_buffer(96, 96)
        ref_depth[40:50] = 5.0  # a z-buffer shared with an earlier mesh
        start_depth = ref_depth.copy()
        rasterize_baseline(v, t, light, ref, alpha=alpha, depth_buffer=ref_depth)
        assert 0.3 < (ref != bg).any(axis=2).mean() < 1
        no_depth = bg.copy()
        rasterize_baseline(v, t, light, no_depth, alpha=alpha)
        for level in simd_levels():
            simd_level(level)
            msg = f"alpha {alpha}, SIMD level {level}"
            np.testing.assert_array_equal(render_lit(v, t, bg, alpha=alpha, num_threads=threads),
                                          no_depth, err_msg=msg)
            d = start_depth.copy()
            out = render_lit(v, t, bg, alpha=alpha, depth_buffer=d, num_threads=threads)
            np.testing.assert_array_equal(out, ref, err_msg=msg)
            np.testing.assert_array_equal(d, ref_depth, err_msg=msg)


def test_render_lit_other_light_and_shapes():
    from Sim3DR.lighting import light_colors, render_lit
    v, t = dome(n=40, size=70, seed=2)
    params = dict(intensity_ambient=0.1, specular_exp=2, color_directional=(1, 0.2, 0.6),
                  light_pos=(-3, 1, 4))
    for h, w in ((70, 70), (9, 130), (130, 9), (1, 70), (70, 1)):
        bg = np.full((h, w, 3), 7, np.uint8)
        ref = bg.copy()
        rasterize_baseline(v, t, light_colors(v, t, **params), ref)
        for n in (1, 4):
            np.testing.assert_array_equal(render_lit(v, t, bg, num_threads=n, **params), ref,
                                          err_msg=f"{h}x{w}, {n} threads")
    # precomputed normals go through the two steps
    n = get_normal(v, t)
    np.testing.assert_array_equal(render_lit(v, t, np.zeros((70, 70, 3), np.uint8), normals=n),
                                  render_lit(v, t, np.zeros((70, 70, 3), np.uint8)))
    with pytest.raises(TypeError, match="unexpected keyword argument 'shininess'"):
        render_lit(v, t, np.zeros((8, 8, 3), np.uint8), shininess=3)
    assert render_lit(v, t, np.zeros((0, 5, 3), np.uint8)).shape == (0, 5, 3)


@pytest.mark.parametrize("level", [None, 1])
def test_simd_levels_agree_on_scattered_triangles(level, simd_level):
    """Big, thin, off-screen and degenerate triangles on odd image sizes, every path."""
    if level is not None:
        simd_level(level)
    for h, w, seed in ((37, 53, 1), (64, 5, 2), (9, 200, 3)):
        v, t, c = scatter_mesh(h, w, ntri=700, seed=seed)
        v[::7, :2] *= 3.0  # some triangles reach far off the image
        v[1::11] = v[0]  # and some collapse
        for threads in (1, 3):
            draw_all(v, t, c, h, w, threads=(threads,))
            draw_all(v, t, c[:, :1], h, w, threads=(threads,))
            depth, index = rasterize_buffers(v, t, h, w, num_threads=threads)
            ref_depth, ref_index = buffers_reference(v, t, h, w)
            np.testing.assert_array_equal(index, ref_index)
            np.testing.assert_array_equal(depth, ref_depth)


def test_render_lit_repeated_and_concurrent_calls():
    """The pool is reused across calls and shared by concurrent callers (each call can
    finish alone): repeated calls and calls from several Python threads at once, with
    different thread counts and meshes, give the same images as one call at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from Sim3DR.lighting import render_lit
    meshes = [dome(n=48, size=80, seed=s) for s in (0, 1)]
    bg = np.full((80, 80, 3), 30, np.uint8)
    expected = [render_lit(v, t, bg, num_threads=1) for v, t in meshes]
    for _ in range(5):
        np.testing.assert_array_equal(render_lit(*meshes[0], bg, num_threads=3), expected[0])

    def job(k):
        m = k % 2
        return m, render_lit(*meshes[m], bg, num_threads=1 + k % 5)

    with ThreadPoolExecutor(6) as ex:
        for m, img in ex.map(job, range(36)):
            np.testing.assert_array_equal(img, expected[m])


_FORK_CHILD = r"""
import multiprocessing as mp, sys
import numpy as np
sys.path.insert(0, {root!r})
from Sim3DR.lighting import render_lit
from tests.helpers.meshes import dome

def child(_):
    v, t = dome(n=40, size=64)
    return render_lit(v, t, np.zeros((64, 64, 3), np.uint8), num_threads=4)

v, t = dome(n=40, size=64)
parent = render_lit(v, t, np.zeros((64, 64, 3), np.uint8), num_threads=4)  # the pool exists
with mp.get_context("fork").Pool(2) as pool:
    images = pool.map(child, range(4))
print("equal", all((img == parent).all() for img in images))
"""


def test_pool_in_a_forked_child():
    """A child forked after the pool started has none of its threads: it makes its own."""
    import subprocess
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", _FORK_CHILD.format(root=root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "equal True", proc.stderr


def test_real_face_render_lit_is_the_two_steps():
    from Sim3DR.lighting import render_lit
    v, t = face_in_image(512)
    light = light_exact(v, normals_exact(v, t))
    bg = np.full((512, 512, 3), 48, np.uint8)
    ref = bg.copy()
    rasterize_baseline(v, t, light, ref)
    for n in (1, 2, 5):
        np.testing.assert_array_equal(render_lit(v, t, bg, num_threads=n), ref, err_msg=f"{n}")
