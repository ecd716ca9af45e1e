"""The latency harness (benchmarks/latency.py): a --quick run end to end, so it cannot rot,
plus its building blocks (timing statistics, the release-style log-mel, backend discovery)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import Budget, Stats, measure  # noqa: E402


# ----------------------------------------------------------------------------- building blocks
def test_stats_percentiles_from_known_samples():
    s = Stats.from_ns([int(x * 1e6) for x in range(1, 101)])  # 1..100 ms
    assert s.n == 100
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.min_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(100.0)


def test_measure_honours_warmup_min_reps_and_budget():
    calls = []
    s = measure(lambda: calls.append(time.sleep(0.001)), Budget(warmup=2, min_reps=5, max_reps=8, seconds=0.0))
    assert s.n == 5 and len(calls) == 7
    assert s.valid() and s.p50_ms >= 0.9
    s = measure(lambda: None, Budget(warmup=0, min_reps=1, max_reps=30, seconds=10.0))
    assert s.n == 30  # max_reps caps a generous time budget


def test_release_style_logmel_equals_runtime_fbank():
    from benchmarks.release_style import SphinxMFCC, get_fbank
    from runtime import fbank
    from runtime.demo_signal import demo_voice

    x = demo_voice(2.0)[:31_977]  # a length that leaves cyclically filled tail frames
    mfc = SphinxMFCC()
    np.testing.assert_allclose(mfc.filters, fbank.mel_filterbank(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(mfc.sig2logspec(x).astype(np.float32), fbank.log_mel(x), rtol=0, atol=2e-5)
    np.testing.assert_allclose(get_fbank(x), fbank.normalise(fbank.log_mel(x)), rtol=0, atol=2e-5)


def test_discovery_gives_reasons_for_what_cannot_run(tmp_path, models_dir):
    from benchmarks.backends import discover

    backends, skipped = discover(models_dir, tmp_path / "no-release", threads=1)
    ids = [b.id for b in backends]
    assert "ort-cpu-fp32" in ids
    reasons = {s["backend"]: s["reason"] for s in skipped}
    assert "release-style" in reasons and "--release" in reasons["release-style"]
    if not (models_dir / "encoder_int8.onnx").is_file():
        assert "no INT8 models" in reasons["ort-cpu-int8"]
    else:  # once INT8 models are exported, they are either measured or skipped with a reason
        assert "ort-cpu-int8" in ids or reasons["ort-cpu-int8"].strip()
    assert not set(ids) & set(reasons)
    assert all(r.strip() for r in reasons.values())


# ----------------------------------------------------------------------------- the --quick run
@pytest.fixture(scope="module")
def quick(models_dir, tmp_path_factory):
    pytest.importorskip("matplotlib", reason="the harness plots with matplotlib (pip install -e '.[bench]')")
    out = tmp_path_factory.mktemp("latency")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency.py"), "--quick",
                           "--models", str(models_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    doc = json.loads((out / "latency.json").read_text())
    return out, doc, proc.stdout, time.perf_counter() - t0


@pytest.mark.slow
def test_quick_writes_table_json_and_png(quick):
    out, doc, stdout, _ = quick
    md = (out / "latency.md").read_text()
    assert "## Targets" in md and "## Latency by stage" in md and "## Throughput" in md
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "latency.png").stat().st_size > 10_000
    assert "wrote" in stdout
    assert doc["quick"] is True and doc["threads"] >= 1
    for key in ("python", "numpy", "onnxruntime", "torch"):
        assert doc["versions"][key]
    assert doc["machine"]["cpu"] and doc["machine"]["logical_cpus"] >= 1


def _numbers(row: dict) -> list[float]:
    return [row[k] for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms")]


def test_quick_rows_are_measured_numbers(quick):
    _, doc, _, _ = quick
    measured = {b["id"] for b in doc["backends"]}
    assert "ort-cpu-fp32" in measured and doc["baseline"] == "release-style" and "release-style" in measured
    assert doc["stages"] and doc["throughput"]
    for row in doc["stages"] + doc["throughput"]:
        assert row["backend"] in measured
        assert row["n"] >= 1
        for x in _numbers(row):
            assert math.isfinite(x) and x > 0, row
    for row in doc["throughput"]:
        assert math.isfinite(row["utt_per_s"]) and row["utt_per_s"] > 0
        assert row["utt_per_s"] == pytest.approx(row["batch"] / (row["p50_ms"] / 1e3))
    stages = {(r["stage"], r["backend"]) for r in doc["stages"]}
    for sid in ("vad", "logmel", "encoder", "decoder_supervised", "decoder_unsupervised", "render_512",
                "e2e_voice2mesh_supervised", "e2e_voice2mesh_unsupervised", "e2e_voice2image_supervised"):
        assert (sid, "ort-cpu-fp32") in stages and (sid, "release-style") in stages
    for b in doc["backends"]:
        assert b["peak_rss_mib"] > 0
    ours = next(b for b in doc["backends"] if b["id"] == "ort-cpu-fp32")
    assert ours["torch_imported"] is False  # the runtime never needs torch


def test_quick_ratios_are_baseline_over_ours_from_the_same_json(quick):
    _, doc, _, _ = quick
    base = {r["stage"]: r["p50_ms"] for r in doc["stages"] if r["backend"] == doc["baseline"]}
    checked = 0
    for row in doc["stages"]:
        if row["backend"] == doc["baseline"]:
            assert row["ratio"] is None
        elif row["stage"] in base:
            assert row["ratio"] == pytest.approx(base[row["stage"]] / row["p50_ms"], rel=1e-9)
            checked += 1
        else:
            assert row["ratio"] is None
    assert checked >= 10
    tbase = {(r["kind"], r["pipeline"], r["batch"], r["seconds"]): r["p50_ms"] for r in doc["throughput"]
             if r["backend"] == doc["baseline"]}
    for row in doc["throughput"]:
        key = (row["kind"], row["pipeline"], row["batch"], row["seconds"])
        if row["backend"] != doc["baseline"] and key in tbase:
            assert row["ratio"] == pytest.approx(tbase[key] / row["p50_ms"], rel=1e-9)
    for t in doc["targets"]:
        for r in t["ours"].values():
            assert r["ratio"] == pytest.approx(t["baseline_p50_ms"] / r["p50_ms"], rel=1e-9)
            assert r["met"] == (r["p50_ms"] <= t["target_ms"])


def test_quick_skipped_backends_carry_a_reason_and_no_rows(quick):
    _, doc, stdout, _ = quick
    import onnxruntime as ort

    measured = {b["id"] for b in doc["backends"]}
    skipped = {s["backend"]: s["reason"] for s in doc["skipped"]}
    assert all(isinstance(r, str) and r.strip() for r in skipped.values())
    assert not measured & set(skipped)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "CUDAExecutionProvider" in skipped["ort-cuda-fp32"]
        assert f"skipped ort-cuda-fp32: {skipped['ort-cuda-fp32']}" in stdout
    for s in doc["unavailable"]:  # a stage a backend does not have is explained, not zeroed
        assert s["reason"].strip() and (s["stage"], s["backend"]) not in {(r["stage"], r["backend"])
                                                                           for r in doc["stages"]}


def test_quick_outputs_agree_between_baseline_and_ours(quick):
    _, doc, _, _ = quick
    par = doc["parity"]["ort-cpu-fp32"]
    assert float(par["embedding"].split()[-1]) < 1e-4
    assert float(par["vertices_supervised"].split()[-1]) < 1e-4


def test_precision_speed_quick_pairs_each_ratio_per_round(models_dir, tmp_path):
    """benchmarks/precision_speed.py: every configuration timed in one process, each INT8 ratio taken
    per round against the fastest FP32 configuration of its row (stand-in INT8 files: the FP32 graphs)."""
    from benchmarks import precision_speed

    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("encoder.onnx", "decoder_supervised.onnx", "frontend.onnx", "voice2mesh_supervised.onnx",
                 "triangles.npy"):
        (folder / name).symlink_to(models_dir / name)
    (folder / "encoder_int8.onnx").symlink_to(models_dir / "encoder.onnx")
    manifest = json.loads((models_dir / "models.json").read_text())
    manifest["pipelines"] = ["supervised"]
    manifest["precisions"] = {"int8": {"graphs": {"encoder": {"file": "encoder_int8.onnx"},
                                                  "decoder_supervised": {"file": "decoder_supervised.onnx"}}}}
    (folder / "models.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    assert precision_speed.main(["--models", str(folder), "--quick", "--out", str(out)]) == 0
    doc = json.loads((out / "precision_speed.json").read_text())
    assert (out / "precision_speed.md").is_file()
    assert set(doc["ratios"]) == {"encoder", "voice -> mesh, supervised", "fbank -> mesh, supervised, batch"}
    for row, r in doc["ratios"].items():
        fp32, int8 = (doc["rows"][row][r[k]]["ms_per_round"] for k in ("fastest_fp32", "fastest_int8"))
        assert len(fp32) == len(int8) == doc["rounds"] == 2
        per_round = np.asarray(int8) / np.asarray(fp32)
        want = np.median(per_round if r["measure"] == "time ratio" else 1 / per_round)
        assert r["median"] == pytest.approx(want)
        assert r["fastest_fp32"] == min((n for n, e in doc["rows"][row].items() if e["precision"] == "fp32"),
                                        key=lambda n: doc["rows"][row][n]["ms_p50"])
    # batch 2 in the smoke test: the batch-32 target does not apply
    assert doc["ratios"]["fbank -> mesh, supervised, batch"]["target"] is None
    assert doc["ratios"]["voice -> mesh, supervised"]["target"] == ["<=", 0.7]
    assert set(doc["stages"]["int8 supervised"]) >= {"vad", "fbank", "encoder", "decoder", "total"}
    assert any(s.startswith("fp16: measured on GPUs only") for s in doc["skipped"])


def test_reduced_precision_rows_are_compared_with_the_fp32_backend_of_their_provider():
    from benchmarks.report import fp32_twins

    doc = {"backends": [{"id": i} for i in ("ort-cpu-fp32", "ort-cpu-int8", "ort-cuda-fp16", "ort-trt-fp16",
                                             "ort-trt-fp32", "ort-cpu-fp32-onnxfrontend")]}
    assert fp32_twins(doc) == {"ort-cpu-int8": "ort-cpu-fp32", "ort-trt-fp16": "ort-trt-fp32"}


def test_precision_speed_refuses_a_folder_without_models_and_audio_that_is_not_audio(models_dir, tmp_path, capsys):
    from benchmarks import precision_speed

    assert precision_speed.main(["--models", str(tmp_path / "none"), "--quick"]) == 2
    assert capsys.readouterr().err == f"precision_speed: error: {tmp_path / 'none'}: models folder not found\n"
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    assert precision_speed.main(["--models", str(models_dir), "--quick", "--audio", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err  # ends with libsndfile's own reason, whose wording is its own
    assert err.startswith(f"precision_speed: error: not a readable audio file: {bad} (neither WAV nor a "
                          "format libsndfile decodes: ") and err.endswith(")\n") and err.count("\n") == 1
    assert not list(tmp_path.glob("precision_speed.*"))


def test_render_speed_versus_quick_compares_two_trees_and_writes_nothing(tmp_path, capsys):
    """Part 1 of render_speed in quick mode, with this tree standing in for the baseline
    (--baseline-dir: no build): both run in worker processes, the images agree, the ratio
    is printed, and nothing is written under benchmarks/results."""
    pytest.importorskip("scipy")
    from benchmarks import render_speed

    results = Path(render_speed.ROOT) / "benchmarks" / "results"
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    rc = render_speed.main(["--quick", "--only-versus", "--mesh", "synthetic", "--no-sweep",
                            "--baseline-dir", str(render_speed.ROOT), "--size", "96"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "differing pixels: 0.0000%" in out and "in this run" in out, out
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    assert after == before


def test_render_speed_markdown_and_differing_share():
    import numpy as np

    from benchmarks import render_speed

    a = np.zeros((4, 5, 3), np.uint8)
    b = a.copy()
    b[1, 2, 0] = 1
    b[3, 4] = 7
    assert render_speed.differing_share(a, b) == 2 / 20
    run = {"median_ms": 8.0, "p10_ms": 7.5, "p90_ms": 9.0, "min_ms": 7.0, "round_medians_ms": [8.0],
           "threads": 2, "others_cpu_share_max": 0.01}
    doc = {"size": 512, "baseline": "512561a", "machine": "cpu-x-2c", "cpu": "X", "cores": 2,
           "git": "abc", "date": "2024-01-01T00:00:00", "rounds": 1, "calls": 3, "warmup": 1,
           "mesh": {"description": "m", "vertices": 3, "triangles": 1, "span": 0.9},
           "old": run, "new": dict(run, median_ms=2.0), "ratio": 4.0, "differing_pixels": 0.0,
           "sweep": [{"threads": 1, "old_ms": 9.0, "new_ms": 3.0, "ratio": 3.0}]}
    md = render_speed.versus_markdown(doc)
    assert "x4.00" in md and "| 1 | 9.00 | 3.00 | x3.00 |" in md


@pytest.mark.slow
def test_predict_workers_quick_compares_files_and_writes_its_report(models_dir, tmp_path, capsys):
    """benchmarks/predict_workers.py: cmp-face predict DIR with --workers 1 and 2 on the session's
    cached models; the files of both must agree (it fails otherwise), the report is written."""
    import json

    from benchmarks import predict_workers

    assert predict_workers.main(["--quick", "--identities", "2", "--per-identity", "2", "--workers", "2",
                                 "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "predict_workers.json").read_text())
    assert doc["outputs_identical"] and doc["workers"] == 2 and len(doc["rounds"]) == 1
    row = doc["rounds"][0]
    assert row["ratio"] == pytest.approx(row["workers_1_s"] / row["workers_2_s"])
    assert "| round | --workers 1 (s) | --workers 2 (s) | ratio |" in (tmp_path / "predict_workers.md").read_text()
    assert "files identical" in capsys.readouterr().out


def test_a_quick_run_never_writes_to_the_committed_results(tmp_path):
    """benchmarks/report.results_folder: a smoke test (--quick) without --out gets a new temporary
    folder, never benchmarks/results/<machine>; a full run writes there; --out always wins."""
    from benchmarks.report import RESULTS, results_folder

    quick = results_folder(None, "cpu-x-2c", "serve", full_run=False)
    assert quick.is_dir() and RESULTS not in quick.parents and quick.name.startswith("cmp-bench-serve-")
    assert results_folder(None, "cpu-x-2c", "serve", full_run=True) == RESULTS / "cpu-x-2c" / "serve"
    assert results_folder(None, "cpu-x-2c", None, full_run=True) == RESULTS / "cpu-x-2c"
    assert results_folder(tmp_path, "cpu-x-2c", "serve", full_run=False) == tmp_path
    quick.rmdir()
