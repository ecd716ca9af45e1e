"""benchmarks/gpu_check.py: the GPU check's code path on the CPU (``--device cpu``), its bars and
verdicts, and its time budget. The GPU rows themselves run only on a GPU machine."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check as gc  # noqa: E402


def run_check(models: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
           "--models", str(models), "--out", str(out), "--pipelines", "supervised", "--utterances", "1", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    doc = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else {}
    return proc, doc


# ----------------------------------------------------------------------------- the whole script, CPU mode
@pytest.mark.slow
def test_cpu_mode_measures_the_cpu_row_and_says_why_gpu_rows_are_not_run(tmp_path, models_dir, pack_dir):
    import onnxruntime as ort

    out = tmp_path / "out"
    proc, doc = run_check(models_dir, out, "--batches", "1,2", "--release", str(pack_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in gc.NAMES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if ".partial" in p.name]  # no temporary files left behind

    rows = {c["id"]: c for c in doc["configs"]}
    # Every GPU backend x precision is listed, none run here, each with the runtime's reason.
    gpu_ids = [f"{b}-cuda-{p}" for b in gc.GPU_BACKENDS for p in gc.PRECISIONS]
    assert set(gpu_ids) <= set(rows)
    for gid in gpu_ids:
        assert rows[gid]["status"] == "not run" and rows[gid]["reason"], gid
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        assert "has no CUDAExecutionProvider" in rows["onnxruntime-cuda-fp32"]["reason"]
    if "TensorrtExecutionProvider" not in providers:
        assert "needs onnxruntime-gpu with its TensorrtExecutionProvider" in rows["onnxruntime-trt-cuda-fp16"]["reason"]
    assert any(w in rows["tensorrt-cuda-fp32"]["reason"] for w in ("tensorrt", "TensorRT"))
    md = (out / "gpu_check.md").read_text()
    for gid in gpu_ids:
        assert f"- `{gid}`: {rows[gid]['reason']}" in md

    # The CPU FP32 row runs the reference's own graphs on the same provider: identical up to the
    # order of multithreaded reductions (< 1e-6), far inside the FP32 bars.
    cpu = rows["onnxruntime-cpu-fp32"]
    assert cpu["status"] == "measured" and cpu["resolved"] == "onnxruntime on cpu, fp32"
    for path in ("stages", "voice2mesh"):
        r = cpu["parity"]["supervised"][path]
        assert r["ok"] and r["values"]["embedding_cosine"] > 1 - 1e-9
        assert r["values"]["params_max_rel"] < 1e-6 and r["values"]["vertices_max_rel"] < 1e-6
    if not (models_dir / "encoder_fp16.onnx").is_file():
        assert rows["onnxruntime-cpu-fp16"]["reason"].startswith(f"supervised: {models_dir} has no fp16 models (")
    gain = doc["reference"]["decoder_gain"]["supervised"]
    assert gain["params"] > 0 and gain["vertices"] > 0

    # Latency: our chain and the release-style baseline (torch eager on the CPU here) at each batch.
    assert doc["baseline"]["status"] == "measured"
    assert doc["baseline"]["parity"]["supervised"]["ok"]
    cells = {(r["chain"], r["batch"]) for r in doc["latency"]}
    assert cells == {(c, b) for c in ("onnxruntime-cpu-fp32", "release-style") for b in (1, 2)}
    for r in doc["latency"]:
        assert r["n"] >= 2 and 0 < r["p50_ms"] <= r["p99_ms"]
    assert doc["stopped"] is None and doc["latency_not_run"] == []
    assert "| onnxruntime-cpu-fp32 | supervised | 2 |" in md
    # CUDA-graph row listed (not run here); where the time goes, per utterance, for our chain.
    assert rows["onnxruntime-cuda-fp32-cudagraph"]["cuda_graph"] and rows["onnxruntime-cuda-fp32-cudagraph"]["status"] == "not run"
    for r in doc["latency"]:
        if r["chain"] == "release-style":
            assert r["stages_ms"] is None
            continue
        st = r["stages_ms"]
        assert set(st) == {"audio", "vad", "voice2mesh", "postprocess", "render"}  # host arrays on the CPU
        assert all(v >= 0 for v in st.values()) and st["voice2mesh"] > 0 and st["render"] > 0
        # per utterance: the stages add up to no more than a batch's p50 divided by its size
        assert sum(st.values()) <= r["p99_ms"] / r["batch"] * 1.5
    assert "### Where the time goes" in md
    # The server on this device under the load test (quick: two low rates).
    serving = doc["serving"]
    assert serving["status"] == "measured" and serving["device"] == "cpu" and serving["max_batch"] == 1
    assert [r["offered_per_s"] for r in serving["rows"]] == [2.0, 4.0][:len(serving["rows"])] and serving["rows"]
    assert all(r["errors"] == {} or not r["held"] for r in serving["rows"])
    assert "## Serving: `cmp-face serve` on this device" in md


def test_a_spent_budget_stops_gracefully_and_still_writes(tmp_path, models_dir):
    out = tmp_path / "out"
    # 13 s: one second beyond what is kept for writing; nothing after the reference fits.
    proc, doc = run_check(models_dir, out, "--budget", "13", "--no-baseline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((out / name).is_file() for name in gc.NAMES)
    cpu = next(c for c in doc["configs"] if c["id"] == "onnxruntime-cpu-fp32")
    assert cpu == {**cpu, "status": "not run", "reason": "time budget of 13 s spent"}
    assert doc["stopped"].startswith("time budget of 13 s spent after")
    assert doc["latency"] == [] and doc["baseline"]["reason"] == "--no-baseline"
    assert "**stopped early**: time budget of 13 s spent" in (out / "gpu_check.md").read_text()


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "unknown device 'tpu': choose auto, cpu, cuda, cuda:N or gpu"),
    (["--device", "auto"], "--device must be cuda, cuda:N or cpu"),
    (["--pipelines", "both"], "--pipelines: choose from supervised, unsupervised"),
    (["--batches", "1,x"], "--batches: comma-separated positive integers"),
    (["--batches", "0"], "--batches: comma-separated positive integers"),
    (["--budget", "5"], "--budget must exceed 12 s (kept for writing the results)"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        gc.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_device_is_normalised():
    assert gc.parse_args(["--device", "cuda"]).device == "cuda:0"
    assert gc.parse_args(["--device", "cuda:3"]).device == "cuda:3"
    assert gc.parse_args(["--device", "cpu"]).device == "cpu"


# ----------------------------------------------------------------------------- bars and verdicts
def test_bars_scale_with_the_decoder_gain_and_give_up_when_meaningless():
    assert gc._bars("fp16", {"params": 0.5, "vertices": 0.1}) == {
        "embedding_cosine": 0.9999, "params_max_rel": 1e-3, "vertices_max_rel": 1e-3}  # gain < 1 never tightens
    bars = gc._bars("fp32", {"params": 10.0, "vertices": 2.0}, embedding_error=1e-3)
    assert bars["params_max_rel"] == pytest.approx((2e-3 + 1e-3) * 10)
    assert bars["vertices_max_rel"] == pytest.approx((2e-3 + 1e-3) * 2)
    # The synthetic unsupervised decoder's gain (~170-250): an INT8 params bar would exceed 0.5.
    assert gc._bars("int8", {"params": 200.0, "vertices": 1.0})["params_max_rel"] is None


class FakePredictor:
    """Stands in for a backend's Predictor: answers from the reference, optionally wrong."""

    def __init__(self, ref: gc.Reference, emb_noise: float = 0.0, scale: float = 1.0) -> None:
        self.ref, self.noise, self.scale = ref, emb_noise, scale

    def embed(self, fbanks):
        e = self.ref.embeddings + self.noise * np.random.default_rng(1).standard_normal(self.ref.embeddings.shape)
        return e.astype(np.float32)

    def decode(self, emb):
        return {k: v * self.scale for k, v in self.ref.decoded.items()}

    def predict_batch(self, waves, sample_rate):
        return [SimpleNamespace(embedding=f["embedding"], params=f["params"] * self.scale,
                                vertices=f["vertices"] * self.scale) for f in self.ref.fused]


def _reference() -> gc.Reference:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((2, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dec = {"params": rng.standard_normal((2, 51)).astype(np.float32),
           "vertices": rng.standard_normal((2, 100, 3)).astype(np.float32)}
    fused = [{"embedding": emb[i], "params": dec["params"][i], "vertices": dec["vertices"][i]} for i in range(2)]
    return gc.Reference([np.zeros((10, 64), np.float32)] * 2, emb, dec, fused, {"params": 1.0, "vertices": 1.0})


def test_parity_passes_a_faithful_backend_and_fails_a_wrong_one():
    ref = _reference()
    voices = [("a", np.zeros(16000, np.int16)), ("b", np.zeros(16000, np.int16))]
    good = gc.parity(FakePredictor(ref), ref, voices, "fp32")
    assert good["ok"] and good["stages"]["values"]["params_max_rel"] == 0.0
    # Outputs off by 1%: beyond the FP32 bar (2e-3), within INT8's (2e-2).
    off = gc.parity(FakePredictor(ref, scale=1.01), ref, voices, "fp32")
    assert not off["ok"] and off["stages"]["failed"] == ["params_max_rel", "vertices_max_rel"]
    assert gc.parity(FakePredictor(ref, scale=1.01), ref, voices, "int8")["ok"]
    # An embedding 1e-2 off per component: cosine ~0.997 fails FP16's 0.9999.
    noisy = gc.parity(FakePredictor(ref, emb_noise=1e-2), ref, voices, "fp16")
    assert noisy["stages"]["failed"] == ["embedding_cosine"] and not noisy["ok"]


def test_markdown_marks_failures_and_missing_bars():
    ref = _reference()
    voices = [("a", np.zeros(16000, np.int16))] * 2
    ref.gain = {"params": 1000.0, "vertices": 1.0}  # no params bar possible
    par = gc.parity(FakePredictor(ref, scale=1.01), ref, voices, "fp32")
    doc = {"machine_name": "m", "date": "2026-12-02T00:00:00", "device": "cuda:0", "quick": True,
           "machine": {"gpu": "G", "cpu": "C", "logical_cpus": 2}, "git": "x",
           "versions": {"python": "3", "torch": "2"}, "cuda_preload": "-", "models": "M",
           "onnxruntime": {"version": "1", "providers": ["CUDAExecutionProvider"]},
           "untrained": True, "command": "c", "elapsed_s": 1.0, "budget_s": 10.0, "stopped": None,
           "inputs": {"parity": "p", "latency": "l"}, "reference": {"decoder_gain": {"supervised": ref.gain}},
           "configs": [{"id": "onnxruntime-cuda0-fp32", "status": "measured", "parity": {"supervised": par}}],
           "baseline": {"status": "not run", "reason": "why", "device": "cuda:0"}, "latency": [],
           "latency_not_run": []}
    md = gc.markdown(doc)
    assert "| onnxruntime-cuda0-fp32 | supervised | stages | 1.0000000 | 1.00e-02 | 1.00e-02 | 0.99999 / none / 0.002 " \
           "| **FAIL** (vertices_max_rel) |" in md
    assert "- release-style baseline: why" in md


# ----------------------------------------------------------------------------- the GPU machine's wrapper
def _tiny_wheel(folder: Path) -> Path:
    """A valid pure-Python wheel of a few hundred bytes (what pip accepts: code, METADATA, WHEEL, RECORD)."""
    import zipfile

    path = folder / "hdummy-1.0-py3-none-any.whl"
    files = {"hdummy/__init__.py": "X = 1\n",
             "hdummy-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hdummy\nVersion: 1.0\n",
             "hdummy-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files["hdummy-1.0.dist-info/RECORD"] = "".join(f"{n},,\n" for n in files) + "hdummy-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def _wrapper(mode: str, carry: Path, home: Path, *args: str, models: str | None = "/nonexistent",
             env: dict | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "GPU_CHECK_CARRY": str(carry), "GPU_CHECK_HOME": str(home),
           "GPU_CHECK_PYTHON": sys.executable, **({"GPU_CHECK_MODELS": models} if models else {}), **(env or {})}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), mode, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_wrapper_joins_the_carried_parts_checks_them_and_installs(tmp_path):
    """Two calls each carry a part (stash), the last joins, checks the sha256 and installs; a part
    missing is refused. The check itself then refuses '--budget 1' (exit 2): no models needed here."""
    pytest.importorskip("Sim3DR._sim3dr", reason="the wrapper would compile Sim3DR in place")
    wheel = _tiny_wheel(tmp_path)
    data = wheel.read_bytes()
    import hashlib
    first, second = tmp_path / "call1" / "parts", tmp_path / "call2" / "parts"
    first.mkdir(parents=True), second.mkdir(parents=True)
    (first / f"{wheel.name}.part-aa").write_bytes(data[:300])
    (second / f"{wheel.name}.part-ab").write_bytes(data[300:])
    (first / f"{wheel.name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {wheel.name}\n")

    broken = _wrapper("run", first.parent, tmp_path / "home-broken")
    assert broken.returncode == 2
    assert f"{wheel.name} joined from 1 parts fails its sha256 (a part missing?)" in broken.stdout

    home = tmp_path / "home"
    assert _wrapper("stash", first.parent, home).returncode == 0
    done = _wrapper("run", second.parent, home, "--budget", "1")
    assert f"installed {wheel.name}" in done.stdout
    assert (home / "site" / "hdummy" / "__init__.py").read_text() == "X = 1\n"
    assert done.returncode == 2 and "--budget must exceed 12 s" in done.stdout


def test_wrapper_packs_a_wheel_as_xz_parts_and_installs_the_tarball(tmp_path):
    """`pack` turns a wheel into xz tarball parts with a sha256 (small parts forced here); two
    calls carry them; `run` joins, checks and unpacks them into the site folder."""
    pytest.importorskip("Sim3DR._sim3dr", reason="the wrapper would compile Sim3DR in place")
    wheel = _tiny_wheel(tmp_path)
    carry = tmp_path / "carry"
    env = {"GPU_CHECK_PART_BYTES": "200"}
    packed = _wrapper("pack", carry, tmp_path / "home-pack", str(wheel), env=env)
    assert packed.returncode == 0, packed.stdout + packed.stderr
    name = "hdummy-1.0-py3-none-any.tar.xz"
    parts = sorted(p.name for p in (carry / "parts").iterdir())
    assert parts[-1] == f"{name}.sha256" and len(parts) >= 3 and all(p.startswith(f"{name}.part-") for p in parts[:-1])
    assert f"packed {wheel.name} into {len(parts) - 1} part(s)" in packed.stdout
    first, second = tmp_path / "call1" / "parts", tmp_path / "call2" / "parts"
    first.mkdir(parents=True), second.mkdir(parents=True)
    for k, part in enumerate(parts):
        shutil.copy(carry / "parts" / part, (first if k % 2 == 0 else second) / part)
    home = tmp_path / "home"
    assert _wrapper("stash", first.parent, home).returncode == 0
    done = _wrapper("run", second.parent, home, "--budget", "1")
    assert f"installed {name}" in done.stdout, done.stdout
    assert (home / "site" / "hdummy" / "__init__.py").read_text() == "X = 1\n"
    assert (home / "site" / "hdummy-1.0.dist-info" / "METADATA").is_file()
    assert done.returncode == 2 and "--budget must exceed 12 s" in done.stdout


def test_wrapper_builds_the_models_in_the_background_from_a_copy_and_records_the_builders_pid(tmp_path, cache_dir,
                                                                                             models_dir):
    """The first `stash` starts the models build from a copy of the sources (on the session's cache:
    found there, so it ends quickly) and records the builder's own pid; `run` then finds the models."""
    home = tmp_path / "home"
    started = _wrapper("stash", tmp_path / "carry", home, models=None, env={"CMP_DEPLOY_CACHE": str(cache_dir)})
    assert started.returncode == 0 and "exporting the synthetic models in the background (pid " in started.stdout
    deadline = time.monotonic() + 120
    while not (home / "models.path").is_file():
        assert time.monotonic() < deadline, (home / "models_build.log").read_text()
        time.sleep(0.2)
    log = (home / "models_build.log").read_text()
    assert log.splitlines()[0] == f"builder pid {(home / 'models.pid').read_text().strip()}"
    assert (home / "models.path").read_text() == str(models_dir)
    assert sorted(p.name for p in (home / "src").iterdir()) == ["export", "runtime"]
    done = _wrapper("run", tmp_path / "carry", home, "--budget", "1", models=None,
                    env={"CMP_DEPLOY_CACHE": str(cache_dir)})
    assert f"prepared: models {models_dir}" in done.stdout, done.stdout
    assert done.returncode == 2 and "--budget must exceed 12 s" in done.stdout
