"""cmp-face evaluate / analyze from the command line on generated folders, the mesh readers, and
the microphone capture with a stand-in ``sounddevice`` module (no machine here has a microphone)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from runtime import mesh_read
from runtime.errors import CmpError, InputError
from runtime.mesh_io import write_obj
from runtime.metrics import DISTANCES
from tests.helpers.metrics_reference import SPEC_PAIRS, ref_scores
from tests.helpers.npy_files import npy_bytes as npy_with_header
from tests.helpers.sounddevice_stand_in import STAND_IN, stand_in_module

ROOT = Path(__file__).resolve().parents[1]
N = 53215


def cmp_face(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=600)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()  # progress lines may come first
    assert "Traceback" not in done.stderr and lines[-1].startswith("cmp-face: error: "), done.stderr
    assert sum(line.startswith("cmp-face:") for line in lines) == 1, done.stderr
    return lines[-1][len("cmp-face: error: "):]


def exact(v: np.ndarray) -> np.ndarray:
    """Rounded to 3 decimals: at most 7 significant digits, so the %.9g text of OBJ/xyz reads back exactly."""
    return np.round(v, 3)


def random_mesh(seed: int) -> np.ndarray:
    return exact(np.random.default_rng(seed).normal(0, 50, (N, 3)))


def write_xyz(path: Path, v: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, v, fmt="%.9g")
    return path


def obj(path: Path, v: np.ndarray, triangles=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_obj(path, v, np.zeros((0, 3), np.int32) if triangles is None else triangles)


# --------------------------------------------------------------------------- readers


def test_read_mesh_formats_round_trip(tmp_path):
    v = random_mesh(0)[:100]
    tri = np.array([[0, 1, 2], [2, 3, 4]], np.int32)
    np.save(tmp_path / "m.npy", v)
    np.savez(tmp_path / "r.npz", vertices=v + 1, vertices_frontal=v)
    np.savez(tmp_path / "s.npz", vertices=v)
    for path in (obj(tmp_path / "m.obj", v, tri), write_xyz(tmp_path / "m.xyz", v), tmp_path / "m.npy",
                 tmp_path / "r.npz", tmp_path / "s.npz"):
        got = mesh_read.read_mesh(path, 100)
        assert got.dtype == np.float64 and np.array_equal(got, v), path
    vertices, faces = mesh_read.read_obj(tmp_path / "m.obj")
    assert np.array_equal(faces, tri)
    # colours after the position, "f a/b/c" corners, comments: all understood
    (tmp_path / "c.obj").write_text("# c\nv 1 2 3 0.5 0.5 0.5\nv 4 5 6 1 1 1\nvn 0 0 1\nv 7 8 9 0 0 0\nf 1/1/1 2/2/2 3/3/3\n")
    vertices, faces = mesh_read.read_obj(tmp_path / "c.obj")
    assert vertices.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]] and faces.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("name, content, message", [
    ("a.obj", "v 1 2 3\nv 1 2\n", "{p}: line 2: expected 3 numbers (x y z after 'v'), found 2"),
    ("b.obj", "v 1 2 3\nv 1 x 3\n", "{p}: line 2: not a number in '1 x 3'"),
    ("c.obj", b"\xff\xfe\x00v", "{p}: not a text file (byte 0 is not UTF-8)"),
    ("d.obj", "v 1 2 3\nv nan 2 3\n", "{p}: NaN or infinite coordinates (first at vertex 1)"),
    ("e.xyz", "1 2 3 4\n", "{p}: line 1: expected 3 numbers (x y z), found 4"),
    ("f.npy", b"\x93NUMPY garbage", "{p}: not a readable .npy array"),
    ("g.ply", "ply\n", "{p}: unknown mesh file type '.ply': expected one of .obj, .xyz, .npy, .npz"),
    ("h.npz", "not a zip", "{p}: not a readable .npz file (File is not a zip file)"),
])
def test_read_mesh_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError) as err:
        mesh_read.read_mesh(path)
    assert str(err.value).startswith(message.format(p=path))


def test_read_mesh_is_bounded(tmp_path, monkeypatch):
    # A header that claims a billion vertices is refused before any data is read.
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 9, 3)})
    with pytest.raises(InputError) as err:
        mesh_read.read_mesh(path)
    assert str(err.value) == f"{path}: a float64 array of shape (1000000000, 3) is larger than a mesh may be"
    # Files over the size limit are not opened at all.
    monkeypatch.setattr(mesh_read, "MAX_FILE_BYTES", 1024)
    big = obj(tmp_path / "big.obj", random_mesh(1)[:200])
    with pytest.raises(InputError) as err:
        mesh_read.read_mesh(big)
    assert str(err.value) == f"{big}: {big.stat().st_size} bytes is larger than the 0 MiB a mesh file may have"
    with pytest.raises(InputError) as err:
        mesh_read.read_mesh(tmp_path / "none.obj")
    assert str(err.value) == f"{tmp_path / 'none.obj'}: file not found"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    monkeypatch.setattr(mesh_read, "MAX_FILE_BYTES", 1 << 20)
    with pytest.raises(InputError) as err:
        mesh_read.read_mesh(tmp_path / "obj.npy")
    assert str(err.value) == f"{tmp_path / 'obj.npy'}: holds Python objects, not numbers"


# --------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def eval_tree(tmp_path_factory) -> dict:
    """PRED/A (two utterances laid out as 'cmp-face predict' writes them, one unsupervised with
    mesh_frontal.obj, a depth.npy to skip, an interrupted run's hidden staging folder), PRED/B
    (one .npy); GT/A/<one>.xyz and GT/B.xyz."""
    root = tmp_path_factory.mktemp("eval")
    pred, gt = root / "pred", root / "gt"
    target_a, target_b = random_mesh(10), random_mesh(11)
    a1 = exact(target_a * np.array([1.1, 1.0, 1.0]) * 0.5)
    a2_frontal = exact(target_a * np.array([1.0, 0.9, 1.05]) + 3.0)
    b1 = exact(target_b * np.array([0.97, 1.04, 1.0]) * 2.0)
    obj(pred / "A" / "utt1" / "mesh.obj", a1)
    obj(pred / "A" / "utt2" / "mesh.obj", random_mesh(99))  # aligned twin: not scored
    obj(pred / "A" / "utt2" / "mesh_frontal.obj", a2_frontal)
    np.save(pred / "A" / "utt2" / "depth.npy", np.zeros((64, 64), np.float32))
    obj(pred / "A" / ".cmp-face-1-abc.partial" / "mesh.obj", random_mesh(98)[:10])  # hidden: ignored
    (pred / "B").mkdir(parents=True)
    np.save(pred / "B" / "b1.npy", b1)
    write_xyz(gt / "A" / "id00001.xyz", target_a)
    write_xyz(gt / "B.xyz", target_b)
    keypoints = np.sort(np.random.default_rng(5).choice(3 * N, 204, replace=False)).astype(np.int64)
    np.save(root / "keypoints_sim.npy", keypoints)
    return {"root": root, "pred": pred, "gt": gt, "keypoints": keypoints,
            "A": (target_a, [a1, a2_frontal]), "B": (target_b, [b1])}


def test_evaluate_scores_the_prediction_folder(eval_tree, tmp_path):
    out = tmp_path / "scores.json"
    done = cmp_face("evaluate", "--pred", eval_tree["pred"], "--gt", eval_tree["gt"],
                    "--keypoints", eval_tree["root"] / "keypoints_sim.npy", "--json", out)
    assert done.returncode == 0, done.stderr
    # Independent expectation (tests/helpers/metrics_reference.ref_scores): per identity, then over identities.
    per = {}
    for identity in ("A", "B"):
        target, preds = eval_tree[identity]
        rows = [ref_scores(p, target, eval_tree["keypoints"]) for p in preds]
        per[identity] = {k: float(np.mean([r[k] for r in rows])) for k in [*SPEC_PAIRS, "keypoint"]}
    expected = {k: (per["A"][k] + per["B"][k]) / 2 for k in [*SPEC_PAIRS, "keypoint"]}
    data = json.loads(out.read_text())
    assert set(data) == {"are", "keypoint_error", "identities", "predictions", "per_identity"}
    assert (data["identities"], data["predictions"]) == (2, 3)
    assert data["are"] == pytest.approx({**{k: expected[k] for k in SPEC_PAIRS},
                                         "mean": np.mean([expected[k] for k in SPEC_PAIRS])}, rel=1e-9)
    assert data["keypoint_error"] == pytest.approx(expected["keypoint"], rel=1e-9)
    assert data["per_identity"]["A"]["predictions"] == 2
    assert data["per_identity"]["B"]["are"]["forehead"] == pytest.approx(per["B"]["forehead"], rel=1e-9)
    assert min(data["are"][k] for k in SPEC_PAIRS) > 1e-4  # the stretches do show
    lines = done.stdout.splitlines()
    assert "over 2 identities (3 predictions)" in lines[0]
    assert f"  forehead         {expected['forehead']:.4f}" in lines
    assert f"  cheek-to-cheek   {expected['cheek']:.4f}" in lines
    assert f"  mean             {data['are']['mean']:.4f}" in lines
    assert f"keypoint error {expected['keypoint']:.4f} (normalised by sqrt(height * width) of the target)" in lines
    assert lines[-1] == f"wrote {out}"
    assert "A: skipped 1 .npy file(s) that are not (N, 3) meshes" in done.stderr


def test_evaluate_in_worker_processes_gives_the_same_scores(eval_tree):
    from runtime.evaluation import evaluate_folders

    serial = evaluate_folders(eval_tree["pred"], eval_tree["gt"], eval_tree["keypoints"], workers=1)
    parallel = evaluate_folders(eval_tree["pred"], eval_tree["gt"], eval_tree["keypoints"], workers=3)
    assert parallel.as_json() == serial.as_json()


def test_evaluate_without_keypoints_has_no_keypoint_key(eval_tree, tmp_path):
    done = cmp_face("evaluate", "--pred", eval_tree["pred"], "--gt", eval_tree["gt"], "--json", tmp_path / "s.json")
    assert done.returncode == 0, done.stderr
    assert "keypoint_error" not in json.loads((tmp_path / "s.json").read_text())
    assert "keypoint error" not in done.stdout


def copy_tree(eval_tree, tmp_path) -> tuple[Path, Path]:
    import shutil

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    shutil.copytree(eval_tree["pred"], pred)
    shutil.copytree(eval_tree["gt"], gt)
    return pred, gt


@pytest.mark.slow
def test_evaluate_bad_inputs(eval_tree, tmp_path):
    pred, gt = copy_tree(eval_tree, tmp_path)
    run = lambda *extra: one_line_error(cmp_face("evaluate", "--pred", pred, "--gt", gt, *extra))  # noqa: E731

    # wrong vertex count
    bad = obj(pred / "B" / "small.obj", random_mesh(3)[:100])
    assert run() == f"{bad}: 100 vertices, expected 53215"
    bad.unlink()
    # NaN coordinates
    v = random_mesh(4)
    v[7, 1] = np.nan
    np.save(pred / "B" / "nan.npy", v)
    assert run() == f"{pred / 'B' / 'nan.npy'}: NaN or infinite coordinates (first at vertex 7)"
    (pred / "B" / "nan.npy").unlink()
    # unreadable file
    (pred / "B" / "broken.obj").write_bytes(b"\x89PNG\r\n")
    assert run() == f"{pred / 'B' / 'broken.obj'}: not a text file (byte 0 is not UTF-8)"
    (pred / "B" / "broken.obj").unlink()
    # ground truth with another vertex count
    write_xyz(gt / "B.xyz", random_mesh(5)[:53000])
    assert run() == f"{gt / 'B.xyz'}: 53000 vertices, expected 53215"
    write_xyz(gt / "B.xyz", eval_tree["B"][0])
    # missing identity
    obj(pred / "C" / "u" / "mesh.obj", random_mesh(6))
    assert run() == (f"{gt}: no ground truth for 1 of 3 identities (C): expected {gt / 'C'}.xyz (or .npy, .obj) "
                     f"or a folder {gt / 'C'}/ holding one .xyz")
    # an identity folder without predictions
    (pred / "C" / "u" / "mesh.obj").unlink()
    write_xyz(gt / "C.xyz", random_mesh(6))
    assert run() == f"{pred / 'C'}: no predictions (.obj, or .npy of shape (53215, 3)) in this identity folder"
    (gt / "C.xyz").unlink()
    (pred / "C" / "u").rmdir()
    (pred / "C").rmdir()
    # two ground-truth files for one identity
    write_xyz(gt / "A" / "id00002.xyz", eval_tree["A"][0])
    assert run() == f"{gt / 'A'}: holds 2 ground-truth files (id00001.xyz, id00002.xyz), expected exactly one"
    (gt / "A" / "id00002.xyz").unlink()
    # bad keypoints
    np.save(tmp_path / "kp.npy", np.array([0.5, 1.5]))
    assert run("--keypoints", tmp_path / "kp.npy") == (
        f"{tmp_path / 'kp.npy'}: expected a non-empty 1-D array of integer indices, got float64 with shape (2,)")
    np.save(tmp_path / "kp.npy", np.array([3 * N]))
    assert run("--keypoints", tmp_path / "kp.npy") == (
        f"{tmp_path / 'kp.npy'}: index {3 * N} is outside the {3 * N} flattened coordinates (x, y, z interleaved) "
        f"of a {N}-vertex mesh")
    assert run("--keypoints", tmp_path / "none.npy") == f"{tmp_path / 'none.npy'}: keypoints file not found"
    assert run("--keypoints", tmp_path) == f"{tmp_path}: keypoints file is a folder, not a file"
    # untrusted .npy headers: read by our reader, never numpy's np.load
    kp = tmp_path / "kp.npy"
    kp.write_bytes(npy_with_header("{'descr': '<i8', 'fortran_order': False, 'shape': (True,), }"))
    assert run("--keypoints", kp) == f"{kp}: not a readable .npy array (corrupt header: shape is not valid: (True,))"
    kp.write_bytes(npy_with_header("{'descr': '<i8', 'fortran_order': False, 'shape': (4000000000,), }"))
    assert run("--keypoints", kp) == f"{kp}: a int64 array of shape (4000000000,) is larger than a mesh may be"
    np.savez(tmp_path / "kp.npz", k=np.arange(3))
    (tmp_path / "kp.npz").rename(kp)
    assert run("--keypoints", kp) == f"{kp}: expected one .npy array of indices"
    # folders
    assert one_line_error(cmp_face("evaluate", "--pred", tmp_path / "nope", "--gt", gt)) == \
        f"{tmp_path / 'nope'}: --pred folder not found"
    (tmp_path / "empty").mkdir()
    assert one_line_error(cmp_face("evaluate", "--pred", tmp_path / "empty", "--gt", gt)) == \
        f"{tmp_path / 'empty'}: holds no identity folders (expected {tmp_path / 'empty'}/<identity>/.../*.obj)"
    # and the intact tree still evaluates
    assert cmp_face("evaluate", "--pred", pred, "--gt", gt).returncode == 0


# --------------------------------------------------------------------------- analyze


@pytest.fixture(scope="module")
def face():
    pytest.importorskip("torch", reason="export.synthetic needs the export extra")
    pytest.importorskip("scipy", reason="the synthetic face mesh needs scipy")
    from export.synthetic import face_mesh

    return face_mesh()


STRETCH = {"female": (0.96, 0.97, 1.0), "male": (1.04, 1.03, 1.0), "regular": (1.0, 1.0, 1.0),
           "slim": (0.93, 1.02, 1.0), "skinny": (0.86, 1.04, 1.0), "wide": (1.1, 0.98, 1.0)}


@pytest.fixture(scope="module")
def means_dir(face, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("means")
    v, tri = face
    for name, s in STRETCH.items():
        if name in ("male", "slim"):
            obj(folder / f"{name}.obj", v * s, tri)  # .obj and .npy both accepted
        else:
            np.save(folder / f"{name}.npy", v * s)
    return folder


def length(v, pair, s=(1, 1, 1)):
    return float(np.linalg.norm((v[pair[0]] - v[pair[1]]) * s))


def test_analyze_mesh_table_json_and_figure(face, means_dir, tmp_path):
    import cv2

    v, tri = face
    pred_s = (1.06, 1.01, 1.0)  # nearest: male (1.04, 1.03) and regular among the types
    mesh = obj(tmp_path / "pred.obj", v * pred_s, tri)
    out, fig = tmp_path / "a.json", tmp_path / "a.png"
    done = cmp_face("analyze", mesh, "--means", means_dir, "--json", out, "--figure", fig)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert (data["gender"], data["face_type"], data["reference"]) == ("male", "wide", "mean male")
    # ||pred - mean|| / N by hand: every coordinate differs by (pred_s - s) * v
    for name in ("female", "male"):
        diff = v * (np.array(pred_s) - STRETCH[name])
        assert data["gender_distances"][name] == pytest.approx(np.sqrt((diff ** 2).sum()) / N, rel=1e-6)
    assert list(data["face_type_distances"]) == ["wide", "skinny", "regular", "slim"]
    assert min(data["face_type_distances"], key=data["face_type_distances"].get) == "wide"
    for name, pair in SPEC_PAIRS.items():
        ours, theirs = length(v, pair, pred_s), length(v, pair, STRETCH["male"])
        m = data["measurements"][name]
        assert m["value"] == pytest.approx(ours, rel=1e-6) and m["mean"] == pytest.approx(theirs, rel=1e-6)
        assert m["percent"] == pytest.approx((ours - theirs) / theirs * 100, rel=1e-5, abs=1e-6)
    assert "  gender     male" in done.stdout and "  face type  wide" in done.stdout
    assert f"  forehead         {data['measurements']['forehead']['value']:>12.5g}" in done.stdout
    image = cv2.imread(str(fig))
    assert image.shape == (660, 1200, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500  # a rendered, coloured face, not a blank page


def test_analyze_result_npz_uses_the_frontal_mesh(face, means_dir, tmp_path):
    v, tri = face
    folder = tmp_path / "utt"
    folder.mkdir()
    frontal = v * STRETCH["skinny"] * (0.9, 1.0, 1.0)
    # aligned vertices far from every mean: analyze must use vertices_frontal
    np.savez(folder / "result.npz", vertices=(v * 3).astype(np.float32), vertices_frontal=frontal.astype(np.float32))
    obj(folder / "mesh.obj", v * 3, tri)  # where the figure finds the triangles
    done = cmp_face("analyze", folder / "result.npz", "--means", means_dir, "--json", tmp_path / "r.json",
                    "--figure", tmp_path / "r.png")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["gender"], data["face_type"]) == ("female", "skinny")
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert "WARNING" not in done.stderr
    # the aligned mesh.obj is 3 times the size of every mean: flagged as a likely units mismatch
    done = cmp_face("analyze", folder / "mesh.obj", "--means", means_dir)
    assert done.returncode == 0, done.stderr
    assert ("WARNING: every measurement differs from the mean male mesh by more than 50%: are the mean meshes "
            "in the units of the predicted frontal mesh?") in done.stderr


def test_analyze_bad_inputs(face, means_dir, tmp_path):
    import shutil

    v, tri = face
    np.save(tmp_path / "mesh.npy", v)
    run = lambda *a: one_line_error(cmp_face("analyze", *a))  # noqa: E731
    assert run(tmp_path / "mesh.npy", "--means", means_dir, "--figure", tmp_path / "x.png") == (
        f"{tmp_path / 'mesh.npy'}: the figure needs the mesh's triangles: give an .obj with faces, "
        "or --models DIR (its triangles.npy)")
    assert not (tmp_path / "x.png").exists()
    means = tmp_path / "means"
    shutil.copytree(means_dir, means)
    (means / "wide.npy").unlink()
    (means / "male.obj").unlink()
    assert run(tmp_path / "mesh.npy", "--means", means) == (
        f"{means}: missing mean mesh(es) male.obj, wide.obj (each may also be .npy)")
    np.save(means / "male.npy", v[:1000])
    np.save(means / "wide.npy", v)
    assert run(tmp_path / "mesh.npy", "--means", means) == f"{means / 'male.npy'}: 1000 vertices, expected 53215"
    assert run(tmp_path / "mesh.npy", "--means", tmp_path / "none") == f"{tmp_path / 'none'}: --means folder not found"
    np.save(tmp_path / "short.npy", v[:500])
    assert run(tmp_path / "short.npy", "--means", means_dir) == f"{tmp_path / 'short.npy'}: 500 vertices, expected 53215"
    assert run(tmp_path / "missing.obj", "--means", means_dir) == f"{tmp_path / 'missing.obj'}: file not found"
    assert run("--means", means_dir) == (
        "give an INPUT (audio, fbank .npy, mesh .obj/.npy or result.npz) or --mic SECONDS, not both")
    assert run(tmp_path / "mesh.npy", "--mic", "2", "--means", means_dir) == (
        "give an INPUT (audio, fbank .npy, mesh .obj/.npy or result.npz) or --mic SECONDS, not both")


def stand_in_package(folder: Path, name: str, source: str) -> dict:
    """Environment that puts a stand-in module ``name`` first on the subprocess's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


def test_analyze_figure_without_matplotlib(face, means_dir, tmp_path):
    v, tri = face
    mesh = obj(tmp_path / "pred.obj", v, tri)
    env = stand_in_package(tmp_path / "site", "matplotlib", "raise ImportError('stand-in: not installed')\n")
    assert one_line_error(cmp_face("analyze", mesh, "--means", means_dir, "--figure", tmp_path / "f.png",
                                   env=env)) == \
        "the figure needs matplotlib, from the plot extra: pip install 'cmp-deploy[plot]'"
    # without --figure the analysis itself needs no matplotlib
    assert cmp_face("analyze", mesh, "--means", means_dir, env=env).returncode == 0


# --------------------------------------------------------------------------- microphone



def test_record_uses_the_default_input_device(monkeypatch):
    from runtime.microphone import record

    sd = stand_in_module()
    sd.SIGNAL = np.arange(-500, 500, dtype=np.int16)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    samples = record(1.5)
    assert samples.dtype == np.int16 and samples.shape == (24000,)
    assert np.array_equal(samples, np.resize(sd.SIGNAL, 24000))
    assert sd.calls == [("check", 1, "int16", 16000), ("rec", 24000, 16000, 1, "int16"), ("wait",)]


@pytest.mark.parametrize("seconds", [0.2, 61, float("nan"), float("inf"), "2", True])
def test_record_bounds_the_length(monkeypatch, seconds):
    from runtime.microphone import record

    monkeypatch.setitem(sys.modules, "sounddevice", stand_in_module())
    with pytest.raises(InputError) as err:
        record(seconds)
    assert str(err.value) == f"recording length: expected 0.5 to 60 seconds, got {seconds!r}"


def test_record_errors(monkeypatch):
    from runtime.microphone import record

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails: the extra is not installed
    with pytest.raises(CmpError) as err:
        record(2)
    assert str(err.value) == "recording needs the mic extra: pip install 'cmp-deploy[mic]'"

    sd = stand_in_module()

    def no_device(device=None, kind=None):
        raise sd.PortAudioError("Error querying device -1")

    sd.query_devices = no_device
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    with pytest.raises(CmpError) as err:
        record(2)
    assert str(err.value) == ("no usable microphone: the default input device cannot record 16-bit mono at "
                              "16000 Hz (Error querying device -1)")

    sd = stand_in_module()
    sd.query_devices = lambda device=None, kind=None: {"name": "speakers", "max_input_channels": 0}
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    with pytest.raises(CmpError) as err:
        record(2)
    assert str(err.value).endswith("(the default device has no input channels)")

    sd = stand_in_module()

    def broken(*a, **k):
        raise sd.PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")

    sd.rec = broken
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    with pytest.raises(CmpError) as err:
        record(2)
    assert str(err.value) == "recording failed: Error opening InputStream: Device unavailable [PaErrorCode -9985]"


def test_missing_portaudio_is_one_line(tmp_path):
    # sounddevice raises OSError at import when the PortAudio library is missing
    env = stand_in_package(tmp_path / "site", "sounddevice", "raise OSError('PortAudio library not found')\n")
    done = subprocess.run([sys.executable, "-c", "from runtime.microphone import record; record(2)"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=120)
    assert done.returncode != 0
    assert ("runtime.errors.CmpError: recording needs the PortAudio library, which was not found "
            "(PortAudio library not found); on Debian/Ubuntu: apt install libportaudio2") in done.stderr


def test_analyze_mic_equals_analyze_of_the_same_recording(models_dir, means_dir, tmp_path):
    from runtime.demo_signal import demo_voice

    env = stand_in_package(tmp_path / "site", "sounddevice", STAND_IN)
    mic = cmp_face("analyze", "--mic", "3", "--means", means_dir, "--models", models_dir,
                   "--json", tmp_path / "mic.json", env=env)
    assert mic.returncode == 0, mic.stderr
    assert "recording 3 s from the default microphone" in mic.stderr
    # the same 3 s the stand-in returned, as a WAV file
    samples = np.resize(demo_voice(), 48000).astype("<i2")
    with wave.open(str(tmp_path / "same.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    wav = cmp_face("analyze", tmp_path / "same.wav", "--means", means_dir, "--models", models_dir,
                   "--json", tmp_path / "wav.json")
    assert wav.returncode == 0, wav.stderr
    a, b = json.loads((tmp_path / "mic.json").read_text()), json.loads((tmp_path / "wav.json").read_text())
    assert a.pop("input") == "microphone (3 s)" and b.pop("input") == str(tmp_path / "same.wav")
    assert a == b
    assert set(a["measurements"]) == set(DISTANCES)


def test_analyze_mic_checks_the_models_before_recording(means_dir, tmp_path):
    env = stand_in_package(tmp_path / "site", "sounddevice", STAND_IN)
    done = cmp_face("analyze", "--mic", "3", "--means", means_dir, "--release", tmp_path / "CMP", env=env)
    assert (done.returncode, done.stderr) == (2, f"cmp-face: error: {tmp_path / 'CMP'}: release folder not found\n")


def test_analyze_fbank_runs_the_predictor(models_dir, means_dir, tmp_path):
    from runtime.demo_signal import demo_voice
    from runtime.fbank import fbank_from_source

    np.save(tmp_path / "f.npy", fbank_from_source(demo_voice(), sample_rate=16000))
    done = cmp_face("analyze", tmp_path / "f.npy", "--means", means_dir, "--models", models_dir,
                    "--pipeline", "unsupervised", "--figure", tmp_path / "f.png")
    assert done.returncode == 0, done.stderr
    assert "UNTRAINED" in done.stderr
    assert done.stdout.splitlines()[-1] == f"wrote {tmp_path / 'f.png'}"
