"""cmp-face predict as a product: options checked before work, all-or-nothing outputs, reruns,
folders of inputs, --version. Run in-process (runtime.cli.main) where no subprocess is needed."""
from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from runtime import cli
from tests.helpers.data import FBANKS, requires


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("option, value, message", [
    ("--threads", "0", "--threads: expected an integer from 1 to 256, got 0"),
    ("--threads", "-3", "--threads: expected an integer from 1 to 256, got -3"),
    ("--threads", "100000", "--threads: expected an integer from 1 to 256, got 100000"),
    ("--max-bytes", "0", "--max-bytes: expected an integer from 1 to 1099511627776, got 0"),
    ("--size", "0", "--size: expected an integer from 1 to 4096 (pixels), got 0"),
    ("--size", "100000", "--size: expected an integer from 1 to 4096 (pixels), got 100000"),
    ("--size", str(2**31), f"--size: expected an integer from 1 to 4096 (pixels), got {2**31}"),
])
def test_bad_options_are_refused_before_any_work(capsys, tmp_path, option, value, message):
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--demo", "-o", str(out), "--models", str(tmp_path / "none"), option, value)
    assert code == 2
    assert err.strip() == f"cmp-face: error: {message}"
    assert not out.exists()  # nothing created, no model opened (the models folder does not even exist)


def test_render_threads_from_the_environment_are_checked_first(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SIM3DR_NUM_THREADS", "100000")
    code, _, err = run(capsys, "predict", "--demo", "-o", str(tmp_path / "o"), "--models", str(tmp_path / "none"))
    assert code == 2
    assert err.strip() == "cmp-face: error: SIM3DR_NUM_THREADS: expected an integer from 1 to 256, got '100000'"
    assert not (tmp_path / "o").exists()


def test_usage_errors_are_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        cli.main(["predict", "--demo", "-o", str(tmp_path), "--threads", "two"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("cmp-face predict: error: argument --threads: invalid int value: 'two' "
                   "(see cmp-face predict --help)")


def test_version(capsys):
    from runtime import __version__

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"cmp-face {__version__}"


def test_inputs_and_output_conflicts(capsys, tmp_path):
    a = tmp_path / "in" / "a.npy"
    b = tmp_path / "in2" / "a.npy"
    for p in (a, b):
        p.parent.mkdir(parents=True)
        np.save(p, np.zeros((5, 64), np.float32))
    code, _, err = run(capsys, "predict", str(a), str(b), "-o", str(tmp_path / "o"), "--models", str(tmp_path))
    assert code == 2
    assert err.strip() == f"cmp-face: error: {a} and {b} would both write {tmp_path / 'o' / 'a'}: " \
                          "rename one, or run them separately"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "predict", str(empty), "-o", str(tmp_path / "o"), "--models", str(tmp_path))
    assert code == 2 and err.startswith(f"cmp-face: error: {empty}: no audio or .npy files in this folder")
    file_out = tmp_path / "file"
    file_out.write_text("mine")
    code, _, err = run(capsys, "predict", "--demo", "-o", str(file_out), "--models", str(tmp_path))
    assert code == 2 and err.strip() == f"cmp-face: error: {file_out}: exists and is not a folder"
    assert file_out.read_text() == "mine"
    assert not (tmp_path / "o").exists()


def test_rerun_replaces_our_files_only_and_says_so(capsys, models_dir, tmp_path):
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--demo", "-o", str(out), "--models", str(models_dir), "--ply")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["mesh.obj", "mesh.ply", "render.png", "result.npz"]
    (out / "notes.txt").write_text("the user's own file")
    code, _, err = run(capsys, "predict", "--demo", "-o", str(out), "--models", str(models_dir))
    assert code == 0, err
    assert (f"note: {out}: replaced the outputs of an earlier run (mesh.obj, render.png, result.npz); "
            "removed mesh.ply (not written this time)") in err
    assert sorted(p.name for p in out.iterdir()) == ["mesh.obj", "notes.txt", "render.png", "result.npz"]
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_a_late_failure_changes_no_output(capsys, models_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    code, _, _ = run(capsys, "predict", "--demo", "-o", str(out), "--models", str(models_dir))
    assert code == 0
    before = snapshot(out)
    contents = {name: (out / name).read_bytes() for name in before}

    import runtime.mesh_io

    def disk_full(path, image, compress_level=6):  # the render is written after mesh.obj and result.npz
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runtime.mesh_io, "write_png", disk_full)
    code, _, err = run(capsys, "predict", "--demo", "-o", str(out), "--models", str(models_dir), "--ply")
    assert code == 2 and err.strip() == f"cmp-face: error: {out}: cannot be written (no space left on device)"
    assert snapshot(out) == before  # no file replaced, no mesh.ply, no staging folder left behind
    assert all((out / name).read_bytes() == data for name, data in contents.items())


@requires(FBANKS, "the release's preprocessed fbanks")
def test_folder_mirrors_the_tree_and_lists_failures(capsys, models_dir, tmp_path):
    src = tmp_path / "voices"
    for i, fb in enumerate(FBANKS[:2]):
        (src / f"id{i}").mkdir(parents=True)
        shutil.copy(fb, src / f"id{i}" / "utt1.npy")
    (src / "id0" / "notes.txt").write_text("ignored: not an input")
    bad = src / "id1" / "broken.npy"
    bad.write_bytes(b"not an npy file")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "predict", str(src), "-o", str(out), "--models", str(models_dir),
                            "--pipeline", "unsupervised")
    assert code == 2
    assert "wrote 2 of 3 output folders under" in stdout
    assert "cmp-face: error: 1 of 3 inputs failed:" in err
    assert f"  {bad}: " in err
    for i in range(2):
        folder = out / f"id{i}" / "utt1"
        assert sorted(p.name for p in folder.iterdir()) == ["face.png", "mesh.obj", "mesh_frontal.obj",
                                                             "render.png", "result.npz"]
        with np.load(folder / "result.npz") as z:
            frontal = z["vertices_frontal"]
        v = np.array([line.split()[1:] for line in (folder / "mesh_frontal.obj").read_text().splitlines()
                      if line.startswith("v ")], np.float32)
        np.testing.assert_array_equal(v, frontal)  # %.9g round-trips float32 exactly
    assert not (out / "id1" / "broken").exists()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_parallel_workers_write_the_same_files_and_list_failures_in_input_order(capsys, models_dir, tmp_path):
    from runtime.demo_signal import demo_voice
    from runtime.inputs import plan_inputs
    from runtime.predict_files import OutputOptions, PredictorSpec, predict_jobs

    src = tmp_path / "voices"
    for i in range(3):
        (src / f"id{i}").mkdir(parents=True)
        for k in range(2):
            with wave.open(str(src / f"id{i}" / f"utt{k}.wav"), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
                w.writeframes(demo_voice(2.0 + k, seed=3 * i + k).tobytes())
    (src / "id0" / "bad.wav").write_bytes(b"RIFF....not a wave file")
    (src / "id2" / "bad.npy").write_bytes(b"not an npy file")
    trees, errors = [], []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        code, stdout, err = run(capsys, "predict", str(src), "-o", str(out), "--models", str(models_dir),
                                "--workers", workers)
        assert code == 2 and "wrote 6 of 8 output folders under" in stdout
        errors.append([line for line in err.splitlines() if line.startswith("  ")])
        trees.append(_tree(out))
    assert trees[0] == trees[1] and len(trees[0]) == 6 * 3  # byte for byte
    assert errors[0] == errors[1] and [e.split(":")[0].strip() for e in errors[0]] == [
        str(src / "id0" / "bad.wav"), str(src / "id2" / "bad.npy")]  # in input order
    # With a GPU this process runs the models and the workers prepare and write: the same files.
    jobs = plan_inputs([src], tmp_path / "fed")
    outcomes = predict_jobs(PredictorSpec(models_dir, device="cpu"), jobs, OutputOptions(), workers=2, feed=True)
    assert [o.source for o in outcomes] == [j.source for j in jobs]
    assert [o.error is None for o in outcomes] == [not j.source.name.startswith("bad") for j in jobs]
    assert _tree(tmp_path / "fed") == trees[0]


def test_max_bytes_bounds_npy_and_audio_inputs(capsys, models_dir, tmp_path):
    feats = tmp_path / "f.npy"
    np.save(feats, np.zeros((1000, 64), np.float32))
    size = feats.stat().st_size
    code, _, err = run(capsys, "predict", str(feats), "-o", str(tmp_path / "o"), "--models", str(models_dir),
                       "--max-bytes", "1000")
    assert code == 2
    assert err.strip() == (f"cmp-face: error: .npy file is too large: {feats} has {size} bytes, the limit is "
                           "1000 bytes (raise --max-bytes to accept it)")
    assert not (tmp_path / "o").exists()
    from runtime.demo_signal import demo_voice
    import wave

    wav = tmp_path / "v.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(demo_voice().astype(np.int16).tobytes())
    code, _, err = run(capsys, "fbank", str(wav), "-o", str(tmp_path / "x.npy"), "--max-bytes", "4096")
    assert code == 2
    assert err.strip() == (f"cmp-face: error: audio file is too large: {wav} has {wav.stat().st_size} bytes, "
                           "the limit is 4096 bytes (raise --max-bytes to accept it)")


def test_predict_from_the_microphone_equals_the_same_samples_from_a_file(capsys, models_dir, tmp_path, monkeypatch):
    import sys
    import wave

    from runtime.demo_signal import demo_voice
    from tests.helpers.sounddevice_stand_in import stand_in_module

    sd = stand_in_module()  # no machine here has a microphone: a stand-in returns a known voice
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    code, _, err = run(capsys, "predict", "--mic", "3", "-o", str(tmp_path / "mic"), "--models", str(models_dir))
    assert code == 0, err
    assert sd.calls[1] == ("rec", 48000, 16000, 1, "int16")
    wav = tmp_path / "same.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.resize(demo_voice(), 48000).astype(np.int16).tobytes())
    code, _, err = run(capsys, "predict", str(wav), "-o", str(tmp_path / "file"), "--models", str(models_dir))
    assert code == 0, err
    with np.load(tmp_path / "mic" / "result.npz") as a, np.load(tmp_path / "file" / "result.npz") as b:
        np.testing.assert_array_equal(a["vertices"], b["vertices"])
    code, _, err = run(capsys, "predict", "--mic", "0.1", "-o", str(tmp_path / "x"), "--models", str(tmp_path / "no"))
    assert code == 2 and err.strip() == "cmp-face: error: recording length: expected 0.5 to 60 seconds, got 0.1"
    assert len(sd.calls) == 3  # checked before any work: the device was not asked again


def test_max_bytes_stops_a_hidden_length_flac_while_decoding(capsys, models_dir, tmp_path):
    """A FLAC of 8 Mi silent frames (16 MiB as 16-bit PCM) whose header hides its length: with
    --max-bytes 1000000 decoding stops at frame 500001, and the message names the option."""
    from benchmarks.hostile import silent_flac_hiding_its_length

    pytest.importorskip("soundfile")
    p = tmp_path / "bomb.flac"
    p.write_bytes(silent_flac_hiding_its_length(8 << 20))
    code, _, err = run(capsys, "predict", str(p), "-o", str(tmp_path / "o"), "--models", str(models_dir),
                       "--max-bytes", "1000000")
    assert code == 2
    assert err.strip() == (
        f"cmp-face: error: audio file is too large: {p} decodes to more than the limit of 1000000 bytes as 16-bit "
        "PCM (decoding stopped after 500001 frames of 1 channel(s) at 16000 Hz; its header declares no length; "
        "raise --max-bytes to accept it)")
    assert not (tmp_path / "o").exists()


def test_an_unusable_output_is_refused_before_models_are_built_or_inputs_read(capsys, tmp_path, monkeypatch):
    """An empty cache: a models build would take minutes. -o under a file is refused at once, and
    nothing is built or written."""
    monkeypatch.setenv("CMP_DEPLOY_CACHE", str(tmp_path / "cache"))
    (tmp_path / "file").write_text("x")
    code, out, err = run(capsys, "predict", "--demo", "-o", str(tmp_path / "file" / "out"))
    assert (code, out) == (2, "")
    assert err == f"cmp-face: error: {tmp_path}/file/out: cannot be made ({tmp_path}/file is not a folder)\n"
    code, out, err = run(capsys, "predict", str(tmp_path / "no-such-dir-of-inputs"), "-o", str(tmp_path / "file"))
    assert (code, err) == (2, f"cmp-face: error: {tmp_path}/file: exists and is not a folder\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no cache entry, no output


def test_worker_processes_limit_the_blas_threads_numpy_started_with():
    """numpy's BLAS keeps the thread count it was loaded with, also in forked workers; two workers
    on two cores each spinning two BLAS threads made --workers 2 slower than one process. In a
    worker (as predict's and the server's initialisers do) it is set to the worker's share."""
    import subprocess
    import sys

    code = ("import numpy, threadpoolctl\n"
            "from runtime.worker_threads import limit_worker_threads\n"
            "limit_worker_threads(1)\n"
            "import os; print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info()}),"
            " os.environ['SIM3DR_NUM_THREADS'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SIM3DR_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                              "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1]", "1"]
