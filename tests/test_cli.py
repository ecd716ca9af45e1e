"""cmp-face end to end in subprocesses: files written, one-line errors, exit codes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.mesh_io import read_png
from tests.helpers.data import FBANKS, WAVS

ROOT = Path(__file__).resolve().parents[1]


def cmp_face(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=600)


def obj_counts(path: Path) -> tuple[int, int]:
    lines = path.read_text().splitlines()
    return sum(line.startswith("v ") for line in lines), sum(line.startswith("f ") for line in lines)


def test_zero_setup_demo_uses_the_cached_synthetic_models(models_dir, tmp_path):
    # models_dir was built by export.cache into $CMP_DEPLOY_CACHE: no --models, no rebuild.
    done = cmp_face("predict", "--demo", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "UNTRAINED" in done.stderr and "building" not in done.stderr
    assert "supervised pipeline" in done.stdout and "encoder" in done.stdout and "total" in done.stdout
    n_v, n_f = obj_counts(tmp_path / "out" / "mesh.obj")
    assert n_v == 53215 and n_f == np.load(models_dir / "triangles.npy").shape[0]
    with np.load(tmp_path / "out" / "result.npz") as z:
        assert sorted(z.files) == ["embedding", "params", "vertices"]
        assert z["vertices"].shape == (53215, 3)
    image = read_png(tmp_path / "out" / "render.png")
    assert image.shape == (512, 512, 3)
    assert (image != image[0, 0]).any(axis=2).mean() > 0.3  # the face covers the frame


@pytest.mark.skipif(not FBANKS, reason="the release's preprocessed fbanks are not in ../shared/data")
def test_unsupervised_from_npy_writes_overlap_and_face(models_dir, tmp_path):
    out = tmp_path / "out"
    done = cmp_face("predict", str(FBANKS[0]), "-o", str(out), "--models", str(models_dir),
                    "--pipeline", "unsupervised")
    assert done.returncode == 0, done.stderr
    with np.load(out / "result.npz") as z:
        assert sorted(z.files) == ["embedding", "face_image", "params", "pose_R", "pose_offset", "vertices",
                                   "vertices_frontal"]
        face = z["face_image"]
    np.testing.assert_array_equal(read_png(out / "face.png"), face)
    overlap = read_png(out / "render.png")
    assert overlap.shape == (120, 120, 3)
    drawn = (overlap != face).any(axis=2)
    assert 0.1 < drawn.mean() < 0.95  # the mesh covers part of the generated face


def test_errors_are_one_line_without_traceback(models_dir, tmp_path):
    cases = [
        (["predict", str(tmp_path / "nope.npy"), "-o", str(tmp_path / "o"), "--models", str(models_dir)],
         f"cmp-face: error: {tmp_path / 'nope.npy'}: file not found"),
        (["predict", "-o", str(tmp_path / "o"), "--models", str(models_dir)],
         "cmp-face: error: give an INPUT (audio file, .npy fbank or folder), --demo for the built-in test voice, "
         "or --mic SECONDS"),
        (["predict", "--demo", "-o", str(tmp_path / "o"), "--models", str(tmp_path / "none")],
         f"cmp-face: error: {tmp_path / 'none'}: models folder not found"),
    ]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 3), np.float32))
    cases.append((["predict", str(bad), "-o", str(tmp_path / "o"), "--models", str(models_dir)],
                  f"cmp-face: error: {bad}: expected shape (T, 64), got (10, 3)"))
    for args, message in cases:
        done = cmp_face(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip() == message
        assert "Traceback" not in done.stderr


def test_debug_shows_the_traceback(models_dir, tmp_path):
    done = cmp_face("predict", str(tmp_path / "nope.npy"), "-o", str(tmp_path / "o"), "--models",
                    str(models_dir), "--debug")
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_export_command_reports_release_errors_in_one_line(tmp_path):
    pytest.importorskip("torch")
    done = cmp_face("export", "--release", str(tmp_path), "-o", str(tmp_path / "m"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"cmp-face: error: release folder {tmp_path} is incomplete")
    assert len(done.stderr.splitlines()) == 1 and not done.stdout  # checked before any work
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(not WAVS, reason="the real speech recordings are not in ../shared/data")
def test_fbank_command_writes_the_release_features(tmp_path):
    from runtime.audio import load_audio
    from runtime.fbank import compute_fbank

    out = tmp_path / "feats" / "a.npy"
    done = cmp_face("fbank", str(WAVS[0]), "-o", str(out))
    assert done.returncode == 0, done.stderr
    feats = np.load(out)
    assert feats.dtype == np.float32 and feats.shape[1] == 64 and feats.shape[0] >= 1000
    np.testing.assert_array_equal(feats, compute_fbank(load_audio(WAVS[0])))
    assert f"{feats.shape[0]} frames x 64 filters" in done.stdout


def test_fbank_command_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    done = cmp_face("fbank", str(empty), "-o", str(tmp_path / "x.npy"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"cmp-face: error: audio file is empty (0 bytes): {empty}"
    silent = tmp_path / "silent.wav"
    import wave
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(48000, np.int16).tobytes())
    done = cmp_face("fbank", str(silent), "-o", str(tmp_path / "x.npy"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("cmp-face: error: no speech found in 3.00 s of audio")
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.skipif(not WAVS, reason="the real speech recordings are not in ../shared/data")
def test_predict_wav_with_fused_frontend(models_dir, tmp_path):
    done = cmp_face("predict", str(WAVS[1]), "-o", str(tmp_path / "o"), "--models", str(models_dir),
                    "--frontend", "onnx", "--pipeline", "unsupervised", "--size", "256")
    assert done.returncode == 0, done.stderr
    assert "voice2mesh" in done.stdout
    assert read_png(tmp_path / "o" / "render.png").shape == (256, 256, 3)


def test_build_engines_alias_without_tensorrt(models_dir):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the no-TensorRT message does not apply")
    done = cmp_face("build-engines", "--models", str(models_dir), "--precision", "fp32")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("cmp-face build-engines: error: TensorRT is not installed: building "
                                          "engines needs it: pip install")
    help_text = cmp_face("build-engines", "--help").stdout
    assert help_text.startswith("usage: cmp-face build-engines ")


def test_error_lines_carry_no_colour_codes_nor_line_breaks():
    from runtime.cli.shell import _one_line

    assert _one_line("\x1b[1;31mFailed\x1b[0m to export:\nmodule 'x' has no attribute 'exc'") == \
        "Failed to export: module 'x' has no attribute 'exc'"


@pytest.mark.parametrize("prog, named", [("cmp-face", "cmp-face export"),
                                         ("cmp-face calibrate", "cmp-face calibrate")])
def test_a_missing_extra_names_the_command_and_the_extra(capsys, prog, named):
    import argparse

    from runtime.cli.shell import run
    from runtime.plugins import Command

    def needs_torch(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    command = Command(name=named.split()[-1], help="", add_arguments=lambda p: None, run=needs_torch,
                      extra=named.split()[-1])
    assert run(command, argparse.Namespace(debug=False), prog) == 2
    extra = command.extra
    assert capsys.readouterr().err == (f"{prog}: error: '{named}' needs the {extra} extra (torch is missing): "
                                       f"pip install 'cmp-deploy[{extra}]'\n")
