"""Lighting, runtime.render helpers and runtime.mesh_io writers."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import Sim3DR
from runtime.errors import CmpError, InputError
from runtime.mesh_io import depth_to_u16, read_png, write_depth, write_obj, write_ply, write_png
from runtime.render import (MAX_SIZE, aligned_to_image, check_num_threads, check_size, depth_map,
                            frontal_to_image, render_aligned, render_frontal, render_overlap,
                            resize_image)
from Sim3DR.lighting import LIGHT_DEFAULTS, light_colors, overlay, render_lit
from Sim3DR.reference import buffers_reference, light_colors_reference, normalize_vertices
from tests.helpers.data import real_face


def grid_mesh(n=12, bump=0.3):
    """A small dome height field in image coordinates (y down, z toward the viewer)."""
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    z = bump * n * np.exp(-(((xs - n / 2) ** 2 + (ys - n / 2) ** 2) / (n * n / 8)))
    v = np.column_stack([xs.ravel() * 2 + 4, ys.ravel() * 2 + 4, z.ravel()]).astype(np.float32)
    q = (ys[:-1, :-1] * n + xs[:-1, :-1]).astype(np.int32).ravel()
    # wound so that the normals point toward +z in these y-down coordinates
    t = np.concatenate([np.stack([q, q + 1, q + n], 1), np.stack([q + 1, q + n + 1, q + n], 1)])
    return v, t.astype(np.int32)


def full(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


# ------------------------------------------------------------------------ lighting


def light_loop(v, t):
    """Per-vertex loop version of the release's lighting, straight from the spec."""
    v = v.astype(np.float64)
    n = np.zeros_like(v)
    for a, b, c in t:
        f = np.cross(v[b] - v[a], v[c] - v[a])
        n[a] += f
        n[b] += f
        n[c] += f
    vn = v - v.min(0)
    vn = vn / vn.max() * 2
    vn = vn - vn.max(0) / 2
    out = np.zeros(len(v))
    for i in range(len(v)):
        ni = n[i] / np.linalg.norm(n[i])
        d = np.array([0, 0, 5.0]) - vn[i]
        d /= np.linalg.norm(d)
        cos = ni @ d
        light = 0.3 + 0.6 * min(max(cos, 0), 1)
        r = 2 * cos * ni - d
        e = np.array([0, 0, 5.0]) - vn[i]
        e /= np.linalg.norm(e)
        spec = np.sum((e * r) ** 5)  # the release's quirk
        spec = min(max(spec, 0), 1) if cos != 0 else 0
        out[i] = min(max(light + 0.1 * spec, 0), 1)
    return out


def test_light_colors_match_spec_loop():
    v, t = grid_mesh()
    light = light_colors(v, t)
    assert light.dtype == np.float32 and light.shape == v.shape
    np.testing.assert_array_equal(light[:, 0], light[:, 1])
    np.testing.assert_array_equal(light[:, 0], light[:, 2])
    np.testing.assert_allclose(light[:, 0], light_loop(v, t), atol=2e-6)
    assert LIGHT_DEFAULTS["intensity_ambient"] == 0.3 and LIGHT_DEFAULTS["specular_exp"] == 5


def test_light_colors_overrides_and_back_faces():
    v, t = grid_mesh()
    only_ambient = light_colors(v, t, intensity_directional=0.0)
    np.testing.assert_allclose(only_ambient, 0.3, atol=1e-7)
    assert (Sim3DR.get_normal(v, t)[:, 2] > 0).all()  # the grid faces the light
    # Back faces get no diffuse light, but the release's specular quirk (element-wise
    # fifth powers) still lights them: reproduce it rather than "fix" it.
    back = light_colors(v, t[:, ::-1])
    np.testing.assert_allclose(back[:, 0], light_loop(v, t[:, ::-1]), atol=2e-6)
    assert back.min() > 0.3
    red = light_colors(v, t, color_ambient=(1, 0, 0), intensity_directional=0.0)
    np.testing.assert_allclose(red[:, 1:], 0, atol=0)


def test_cpp_lighting_matches_numpy_reference():
    rng = np.random.default_rng(3)
    v, t = grid_mesh()
    for verts, tris in ((v, t), (v, t[:, ::-1]), (v * np.float32(1e4) + np.float32(5e4), t)):
        for params in ({}, {"specular_exp": 3, "light_pos": (1.0, -2.0, 4.0), "view_pos": (0.0, 1.0, 3.0)},
                       {"color_directional": (1.0, 0.5, 0.25), "intensity_specular": 0.5}):
            np.testing.assert_allclose(light_colors(verts, tris, **params),
                                       light_colors_reference(verts, tris, **params), atol=2e-6)
    noisy = v + rng.normal(0, 0.01, v.shape).astype(np.float32)
    np.testing.assert_allclose(light_colors(noisy, t), light_colors_reference(noisy, t), atol=2e-6)


@pytest.mark.parametrize("verts", [
    [[-3e38, 0, 0], [3e38, 0, 0], [0, 3e38, 1]],  # float32 extent overflows
    [[0, 0, 0], [1e-40, 0, 0], [0, 1e-40, 1e-40]],  # 2 / extent overflows
    [[1e20, 0, 0], [3e20, 1e20, 0], [0, 3e20, 1e20]],
])
def test_light_is_finite_for_huge_and_tiny_finite_vertices(verts):
    v, t = np.array(verts, np.float32), np.array([[0, 1, 2]])
    light = light_colors(v, t)
    assert np.isfinite(light).all() and (light >= 0).all() and (light <= 1).all()
    np.testing.assert_allclose(light[:, 0], light_loop(v, t), atol=2e-6)
    np.testing.assert_allclose(light, light_colors_reference(v, t), atol=2e-6)


@pytest.mark.parametrize("change, message", [
    ({"specular_exp": -1}, "specular_exp: expected a whole number >= 0, got -1"),
    ({"specular_exp": 2.5}, "specular_exp: expected a whole number >= 0, got 2.5"),
    ({"specular_exp": float("inf")}, "specular_exp: expected a whole number >= 0, got inf"),
    ({"specular_exp": 1e39}, "specular_exp: expected a whole number >= 0, got 1e+39"),
    ({"specular_exp": "5"}, "specular_exp: expected a whole number >= 0, got '5'"),
    ({"intensity_ambient": -0.1}, "intensity_ambient: expected a number in [0, 1], got -0.1"),
    ({"intensity_directional": 1.5},
     "intensity_directional: expected a number in [0, 1], got 1.5"),
    ({"intensity_specular": float("nan")},
     "intensity_specular: expected a number in [0, 1], got nan"),
    ({"intensity_ambient": None}, "intensity_ambient: expected a number in [0, 1], got None"),
    ({"color_ambient": (2, 0, 0)}, "color_ambient: expected 3 numbers in [0, 1], got (2, 0, 0)"),
    ({"color_directional": (1, 1)},
     "color_directional: expected 3 numbers in [0, 1], got (1, 1)"),
    ({"light_pos": (0, 0)},
     "light_pos: expected 3 finite numbers (float32 range), got (0, 0)"),
    ({"light_pos": (1e300, 0, 5)},
     "light_pos: expected 3 finite numbers (float32 range), got (1e+300, 0, 5)"),
    ({"view_pos": "up"}, "view_pos: expected 3 finite numbers (float32 range), got 'up'"),
    ({"normals": np.full((144, 3), 2.0)},
     "normals: expected unit vectors (or zero rows) such as get_normal returns"),
    ({"normals": np.full((144, 3), np.nan)},
     "normals: expected unit vectors (or zero rows) such as get_normal returns"),
    ({"normals": np.zeros((3, 3))},
     "normals: expected a numeric array of shape (144, 3) to match vertices, got float64 "
     "with shape (3, 3)"),
])
def test_light_parameter_errors(change, message):
    v, t = grid_mesh()
    with pytest.raises(Sim3DR.Sim3DRInputError, match=full(message)):
        light_colors(v, t, **change)


def test_light_parameter_edges_stay_finite():
    v, t = grid_mesh()
    n = Sim3DR.get_normal(v, t)
    for params in ({"specular_exp": 0}, {"specular_exp": 16}, {"specular_exp": 1e30},
                   {"intensity_ambient": 1, "intensity_directional": 1, "intensity_specular": 1},
                   {"light_pos": (3e38, -3e38, 3e38), "view_pos": (-3e38, 0, 0)},
                   {"normals": np.zeros_like(n)}, {"normals": n}):
        light = light_colors(v, t, **params)
        assert np.isfinite(light).all() and light.min() >= 0 and light.max() <= 1, params
    # the exponent 0 makes every term 1: spec = 3, clipped to 1
    np.testing.assert_allclose(light_colors(v, t, specular_exp=0),
                               light_colors_reference(v, t, specular_exp=0), atol=2e-6)


def test_normalize_vertices():
    v = np.array([[1, 2, 3], [3, 6, 4]], np.float32)
    out = normalize_vertices(v)
    # minus min: [[0,0,0],[2,4,1]]; / 4 * 2: [[0,0,0],[1,2,0.5]]; minus max/2
    np.testing.assert_allclose(out, [[-0.5, -1, -0.25], [0.5, 1, 0.25]])
    np.testing.assert_array_equal(v, [[1, 2, 3], [3, 6, 4]])  # input untouched
    assert np.isfinite(normalize_vertices(np.ones((3, 3), np.float32))).all()


def test_render_lit_copies_background_and_matches_manual_pipeline():
    v, t = grid_mesh()
    bg = np.random.default_rng(0).integers(0, 255, (32, 30, 3), dtype=np.uint8)
    keep = bg.copy()
    out = render_lit(v, t, bg)
    np.testing.assert_array_equal(bg, keep)
    manual = Sim3DR.rasterize(v, t, light_colors(v, t), bg.copy())
    np.testing.assert_array_equal(out, manual)
    assert (out != bg).any()
    half = render_lit(v, t, bg, alpha=0.5)
    np.testing.assert_array_equal(half, Sim3DR.rasterize(v, t, light_colors(v, t), bg.copy(),
                                                         alpha=0.5))


def test_overlay():
    a = np.array([[[0, 100, 255]]], np.uint8)
    b = np.array([[[255, 101, 0]]], np.uint8)
    np.testing.assert_array_equal(overlay(a, b, 0.5), [[[128, 100, 128]]])  # half to even
    np.testing.assert_array_equal(overlay(a, b, 0.0), a)
    np.testing.assert_array_equal(overlay(a, b, 1.0), b)
    with pytest.raises(ValueError):
        overlay(a, b[:, :, :2], 0.5)


# ------------------------------------------------------------------------ runtime.render


def test_render_overlap_draws_over_face_copy():
    v, t = grid_mesh()
    face = np.full((120, 120, 3), 90, np.uint8)
    out = render_overlap(v, t, face)
    assert out.shape == (120, 120, 3) and out.dtype == np.uint8
    assert (face == 90).all()
    np.testing.assert_array_equal(out, render_lit(v, t, face))
    np.testing.assert_array_equal(render_overlap(v.T, t, face), out)  # (3, N) layout


def test_render_overlap_errors_are_input_errors():
    v, t = grid_mesh()
    face = np.zeros((120, 120, 3), np.uint8)
    bad = t.copy()
    bad[0, 0] = len(v)
    with pytest.raises(InputError, match=full(f"triangles: index {len(v)} out of range "
                                              f"for {len(v)} vertices")):
        render_overlap(v, bad, face)
    with pytest.raises(InputError, match=full("face_image_bgr: expected a uint8 (H, W, 3) "
                                              "BGR image, got float64 with shape (120, 120, 3)")):
        render_overlap(v, t, face.astype(np.float64))
    v2 = v.copy()
    v2[3, 1] = np.nan
    with pytest.raises(InputError, match=full("vertices: contains NaN or infinite values")):
        render_overlap(v2, t, face)


def test_render_aligned_scales_the_frame():
    v, t = grid_mesh()
    face = np.full((120, 120, 3), 30, np.uint8)
    small = render_overlap(v, t, face)
    big = render_aligned(v, t, size=480, background=face)
    assert big.shape == (480, 480, 3)
    drawn_small = (small != 30).any(axis=2)
    drawn_big = (big != 30).any(axis=2)
    # the covered area scales with the square of the factor (4x4)
    assert drawn_big.sum() == pytest.approx(16 * drawn_small.sum(), rel=0.15)
    # lighting is invariant to the uniform scale: same grey levels
    assert abs(np.median(big[drawn_big]) - np.median(small[drawn_small])) <= 2
    grey = render_aligned(v, t, size=240)
    assert tuple(grey[0, 0]) == (48, 48, 48)


def test_render_frontal_real_face(tmp_path):
    v, t = real_face()
    img = render_frontal(v, t, size=256)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    bg = (img == 48).all(axis=2)
    cover = 1 - bg.mean()
    assert 0.45 < cover < 0.9
    gray = img[:, :, 0].astype(float)
    np.testing.assert_array_equal(img[:, :, 0], img[:, :, 1])
    face = gray[~bg]
    assert face.std() > 10 and face.max() > 200 and face.min() < 150
    # surfaces facing the light (+z) are brighter than grazing ones
    n = Sim3DR.get_normal(v * np.array([1, -1, 1], np.float32), t)
    light = light_colors(v * np.array([1, -1, 1], np.float32), t)[:, 0]
    assert light[n[:, 2] > 0.95].mean() > light[(n[:, 2] > 0) & (n[:, 2] < 0.3)].mean() + 0.2
    # the face is upright: the widest rows (cheeks / forehead) are not at the bottom
    rows = (~bg).sum(axis=1)
    assert np.argmax(rows) < 200
    write_png(tmp_path / "frontal.png", img)
    np.testing.assert_array_equal(read_png(tmp_path / "frontal.png"), img)


def test_render_frontal_background_and_errors():
    v, t = grid_mesh()
    out = render_frontal(v, t, size=64, background=(10, 20, 30))
    assert tuple(out[0, 0]) == (10, 20, 30)
    bg = np.full((16, 16, 3), 7, np.uint8)
    assert tuple(render_frontal(v, t, size=64, background=bg)[0, 0]) == (7, 7, 7)
    with pytest.raises(InputError, match=full("size: expected an integer from 1 to 4096 (pixels), "
                                              "got 0")):
        render_frontal(v, t, size=0)
    with pytest.raises(InputError, match=r"^vertices: expected an \(N, 3\) or \(3, N\)"):
        render_frontal(np.zeros((5, 2)), t, size=64)


@pytest.mark.parametrize("size", [0, -1, 4097, 100000, 2**31, 2.0, 512.5, "512", True, None])
def test_check_size_errors(size):
    message = full(f"size: expected an integer from 1 to 4096 (pixels), got {size!r}")
    with pytest.raises(InputError, match=message):
        check_size(size)
    v, t = grid_mesh()
    for entry in (lambda: render_frontal(v, t, size), lambda: render_aligned(v, t, size),
                  lambda: frontal_to_image(v, size), lambda: aligned_to_image(v, size),
                  lambda: depth_map(v, t, size)):
        with pytest.raises(InputError, match=message):
            entry()


def test_check_size_values():
    assert MAX_SIZE == 4096
    assert check_size(1) == 1 and check_size(np.int64(4096)) == 4096
    assert type(check_size(np.int32(7))) is int
    assert check_size(None, 512) == 512 and check_size(240, 512) == 240
    with pytest.raises(InputError, match=full("frame: expected an integer from 1 to 4096 (pixels), "
                                              "got 0")):
        aligned_to_image(np.zeros((3, 3)), 120, frame=0)
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(InputError, match=full("height: expected an integer from 1 to 4096 (pixels), "
                                              "got 0")):
        resize_image(img, 0, 4)
    with pytest.raises(InputError, match=full("width: expected an integer from 1 to 4096 (pixels), "
                                              "got 5000")):
        resize_image(img, 4, 5000)
    assert resize_image(img, 4096, 1).shape == (4096, 1, 3)


def test_prediction_render_sizes_are_checked():
    """Prediction.render/depth/image_vertices: None means the default, 0 is an error."""
    from runtime.result import Prediction

    v, t = grid_mesh()
    face = np.full((120, 120, 3), 90, np.uint8)
    sup = Prediction("supervised", np.zeros(64, np.float32), np.zeros(51, np.float32), v, t)
    unsup = Prediction("unsupervised", np.zeros(64, np.float32), np.zeros(102, np.float32), v, t,
                       face_image=face)
    assert sup.render().shape == (512, 512, 3) and sup.depth().shape == (512, 512)
    assert unsup.render().shape == (120, 120, 3) and unsup.depth().shape == (120, 120)
    assert unsup.render(size=37, background=(0, 0, 0)).shape == (37, 37, 3)
    message = full("size: expected an integer from 1 to 4096 (pixels), got 0")
    for call in (lambda: sup.render(size=0), lambda: unsup.render(size=0), lambda: sup.depth(0),
                 lambda: unsup.depth(0), lambda: sup.image_vertices(0),
                 lambda: unsup.image_vertices(0)):
        with pytest.raises(InputError, match=message):
            call()


def test_check_num_threads(monkeypatch):
    monkeypatch.setenv("SIM3DR_NUM_THREADS", "3")
    assert check_num_threads() == 3 and check_num_threads(256) == 256
    v, t = grid_mesh()
    for env in ("0", "300", "x"):
        monkeypatch.setenv("SIM3DR_NUM_THREADS", env)
        message = full(f"SIM3DR_NUM_THREADS: expected an integer from 1 to 256, got {env!r}")
        with pytest.raises(InputError, match=message):
            check_num_threads()
        with pytest.raises(InputError, match=message):
            render_frontal(v, t, 64)
    with pytest.raises(InputError, match=full("num_threads: expected an integer from 1 to 256, "
                                              "got 512")):
        check_num_threads(512)


def test_render_cpp_failures_are_cmp_errors(monkeypatch):
    v, t = grid_mesh()

    def out_of_memory(*args):
        raise MemoryError

    # render_lit's one C++ pass (lighting and rasterisation)
    monkeypatch.setattr(Sim3DR._sim3dr, "render_lit_u8", out_of_memory)
    with pytest.raises(CmpError, match=full("render_lit: out of memory")) as info:
        render_aligned(v, t, 64)
    assert not isinstance(info.value, InputError)


def aligned_dome():
    """A dome in the 120x120 frame's image coordinates, off the pixel grid."""
    v, t = grid_mesh(n=16)
    v[:, :2] = v[:, :2] * np.float32(2.37) + np.float32(11.3)  # x, y in [20.8, 93.2]
    v[:, 2] *= np.float32(2.37)
    return v, t


@pytest.mark.parametrize("size", [37, 120, 240, 512])
def test_aligned_geometry_at_other_sizes_matches_spec(size):
    """Pixel (x, y) is sampled at its integer coordinates (ORIGINAL.md section 3), so pixel
    centres map between a 120 frame and a size-pixel image as x' = (x + 0.5) * size/120
    - 0.5: computed here, rasterised by the numpy reference, compared with the renders."""
    v, t = aligned_dome()
    k = np.float32(size / 120)
    ref = np.empty_like(v)
    ref[:, :2] = (v[:, :2] + np.float32(0.5)) * k - np.float32(0.5)
    ref[:, 2] = v[:, 2] * k
    ref_depth, ref_index = buffers_reference(ref, t, size, size)
    np.testing.assert_array_equal(depth_map(aligned_to_image(v, size), t, size), ref_depth)
    magenta = (255, 0, 255)  # never a lit grey
    img = render_aligned(v, t, size, background=magenta)
    np.testing.assert_array_equal((img != magenta).any(axis=2), ref_index >= 0)
    # the mesh's extent: left edge at x = 20.8 in the frame -> 21.3 * k - 0.5
    cols = np.flatnonzero((ref_index >= 0).any(axis=0))
    assert cols[0] == int(np.ceil(21.3 * size / 120 - 0.5))


def test_resize_image():
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20
    near = resize_image(img, 4, 4, mode="nearest")
    np.testing.assert_array_equal(near[:2, :2], np.broadcast_to(img[0, 0], (2, 2, 3)))
    np.testing.assert_array_equal(near[2:, 2:], np.broadcast_to(img[1, 1], (2, 2, 3)))
    lin = resize_image(img, 4, 4)
    np.testing.assert_array_equal(lin[0, 0], img[0, 0])  # corners clamp
    np.testing.assert_array_equal(lin[3, 3], img[1, 1])
    assert lin[0, 1, 0] == round(0.75 * img[0, 0, 0] + 0.25 * img[0, 1, 0])


# ------------------------------------------------------------------------ mesh_io


def parse_obj(path):
    vs, fs = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if parts[0] == "v":
            vs.append([float(x) for x in parts[1:]])
        elif parts[0] == "f":
            fs.append([int(x) for x in parts[1:]])
    return np.array(vs), np.array(fs)


def test_write_obj_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    v = (rng.standard_normal((50, 3)) * [1e5, 1e-4, 3]).astype(np.float32)
    t = rng.integers(0, 50, (80, 3))
    vs, fs = parse_obj(write_obj(tmp_path / "m.obj", v, t))
    np.testing.assert_array_equal(vs.astype(np.float32), v)  # exact float32 round trip
    np.testing.assert_array_equal(fs, t + 1)
    c = rng.random((50, 3)).astype(np.float32)
    vs, _ = parse_obj(write_obj(tmp_path / "c.obj", v, t, colors=c))
    np.testing.assert_allclose(vs[:, 3:], c, atol=1e-6)
    vs, _ = parse_obj(write_obj(tmp_path / "u.obj", v, t, colors=(c * 255).astype(np.uint8)))
    np.testing.assert_allclose(vs[:, 3:], (c * 255).astype(np.uint8) / 255, atol=1e-6)


def parse_ply(path):
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    colored = "property uchar red" in header
    vdt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colored:
        vdt += [("r", "u1"), ("g", "u1"), ("b", "u1")]
    vert = np.frombuffer(data, dtype=vdt, count=nv, offset=end)
    off = end + vert.nbytes
    face = np.frombuffer(data, dtype=[("n", "u1"), ("i", "<i4", (3,))], count=nf, offset=off)
    assert off + face.nbytes == len(data)
    return header, vert, face


def test_write_ply_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.standard_normal((40, 3)).astype(np.float32)
    t = rng.integers(0, 40, (70, 3)).astype(np.int32)
    header, vert, face = parse_ply(write_ply(tmp_path / "m.ply", v, t))
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "element face 70" in header and "property list uchar int vertex_indices" in header
    np.testing.assert_array_equal(np.column_stack([vert["x"], vert["y"], vert["z"]]), v)
    assert (face["n"] == 3).all()
    np.testing.assert_array_equal(face["i"], t)
    c = rng.random((40, 3))
    _, vert, _ = parse_ply(write_ply(tmp_path / "c.ply", v, t, colors=c))
    np.testing.assert_array_equal(np.column_stack([vert["r"], vert["g"], vert["b"]]),
                                  np.rint(c * 255).astype(np.uint8))


def test_mesh_writer_errors(tmp_path):
    v = np.zeros((3, 3), np.float32)
    with pytest.raises(InputError, match=full("triangles: index 3 out of range for 3 vertices")):
        write_obj(tmp_path / "a.obj", v, np.array([[0, 1, 3]]))
    with pytest.raises(InputError, match=full("colors: expected a numeric (3, 3) array, got "
                                              "float64 with shape (2, 3)")):
        write_ply(tmp_path / "a.ply", v, np.array([[0, 1, 2]]), colors=np.zeros((2, 3)))


def png_chunks(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        out.append((kind, body))
        pos += 12 + n
    return out


def test_write_png_bytes_bgr_to_rgb(tmp_path):
    from PIL import Image  # an independent decoder (matplotlib's dependency)

    img = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    chunks = png_chunks(write_png(tmp_path / "c.png", img).read_bytes())
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (7, 5, 8, 2, 0, 0, 0)
    with Image.open(tmp_path / "c.png") as decoded:
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), img[:, :, ::-1])  # RGB in the file
    np.testing.assert_array_equal(read_png(tmp_path / "c.png"), img)


def test_write_png_gray_16bit_and_alpha(tmp_path):
    from PIL import Image

    g16 = np.array([[0, 1, 65535], [256, 4660, 300]], np.uint16)
    chunks = png_chunks(write_png(tmp_path / "g.png", g16).read_bytes())
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (3, 2, 16, 0, 0, 0, 0)
    with Image.open(tmp_path / "g.png") as decoded:
        np.testing.assert_array_equal(np.asarray(decoded).astype(np.uint16), g16)
    np.testing.assert_array_equal(read_png(tmp_path / "g.png"), g16)
    g8 = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    np.testing.assert_array_equal(read_png(write_png(tmp_path / "g8.png", g8)), g8[:, :, 0])
    bgra = np.random.default_rng(4).integers(0, 256, (3, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(read_png(write_png(tmp_path / "a.png", bgra)), bgra)
    with pytest.raises(InputError, match=full("image: expected uint8 gray/BGR/BGRA or uint16 "
                                              "gray, got float32 with shape (2, 2)")):
        write_png(tmp_path / "x.png", np.zeros((2, 2), np.float32))


def test_read_png_all_filters(tmp_path):
    # Hand-made PNG using filter types 1-4 on successive rows.
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    rgb = img[:, :, ::-1].reshape(5, 12).astype(np.int32)
    rows, prev = [], np.zeros(12, np.int32)
    for y, ftype in enumerate([1, 2, 3, 4, 0]):
        cur, enc = rgb[y], []
        for x in range(12):
            a = cur[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2,
                    4: a if pa <= pb and pa <= pc else (b if pb <= pc else c)}[ftype]
            enc.append((cur[x] - pred) & 0xFF)
        rows.append(bytes([ftype]) + bytes(enc))
        prev = cur
    ihdr = struct.pack(">IIBBBBB", 4, 5, 8, 2, 0, 0, 0)

    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    (tmp_path / "f.png").write_bytes(data)
    np.testing.assert_array_equal(read_png(tmp_path / "f.png"), img)


def test_write_depth(tmp_path):
    depth = np.full((4, 5), -np.inf, np.float32)
    depth[1, 1], depth[2, 3], depth[3, 4] = 10.0, 20.0, 15.0
    depth[0, 0] = Sim3DR.DEPTH_INIT  # the z-buffer's initial value also means empty
    png, npy = write_depth(tmp_path / "d.png", depth)
    assert npy == tmp_path / "d.npy"
    u16 = read_png(png)
    assert u16.dtype == np.uint16
    assert u16[1, 1] == 1 and u16[2, 3] == 65535 and u16[3, 4] == 32768
    assert (u16[depth < 10] == 0).all()
    raw = np.load(npy)
    assert raw.dtype == np.float32 and raw[2, 3] == 20 and np.isneginf(raw[0, 0])
    u, drawn = depth_to_u16(np.full((2, 2), 3.0, np.float32))
    assert (u == 65535).all() and drawn.all()


def test_depth_from_rasterize_buffers(tmp_path):
    v, t = grid_mesh()
    depth, index = Sim3DR.rasterize_buffers(v, t, 32, 32)
    png, _ = write_depth(tmp_path / "g.png", depth)
    u16 = read_png(png)
    assert ((u16 > 0) == (index >= 0)).all()
