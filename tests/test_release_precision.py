"""Release-layout checkpoints written by other code go through the whole precision flow (issue 10):
export with FP16, INT8 calibration (both flavours), the accuracy report, and the Predictor at each
precision. The checkpoints come from ``tests/test_checkpoints.py``'s independent writer: random
weights in the release's key layout, with its own 300-vertex basis (so the report must say that
the ARE cannot be measured on it instead of failing)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from calibration.quality import BARS
from runtime import Predictor
from runtime.cli import main
from runtime.errors import CmpError
from tests.helpers.data import DATA, FBANKS, WAVS, requires
from tests.helpers.release_writer import N_VERTICES, write_foreign_release

pytest.importorskip("torch")


@pytest.mark.slow
@requires(FBANKS, "fbank_preprocessed")
@requires(WAVS, "voxceleb_wav")
def test_release_layout_checkpoints_through_the_precision_flow(tmp_path, capsys):
    release = write_foreign_release(tmp_path / "release")
    models = tmp_path / "models"
    wavs, fbanks = DATA / "voxceleb_wav", DATA / "fbank_preprocessed"

    # FP16 ranges from the recordings; INT8 calibrated on the fbanks, so the recordings stay held out for it.
    assert main(["export", "--release", str(release), "-o", str(models), "--pipeline", "supervised",
                 "--precision", "fp32,fp16", "--fp16-audio", str(wavs)]) == 0
    for flavour in ("tensorrt", "cpu"):
        assert main(["calibrate", "--models", str(models), "--fbanks", str(fbanks), "--flavour", flavour]) == 0
    manifest = json.loads((models / "models.json").read_text())
    assert not manifest.get("synthetic") and set(manifest["precisions"]) == {"fp16", "int8", "int8u8"}
    assert manifest["precisions"]["fp16"]["ranges_from"].startswith(f"audio {wavs}")
    assert manifest["precisions"]["int8"]["calibrated_on"].startswith(f"fbanks {fbanks}")
    for precision, entry in manifest["precisions"].items():
        for graph, g in entry["graphs"].items():
            if g["file"] is None:  # the frontend stays FP32 (its power spectrum overflows FP16), said why
                assert graph == "frontend" and "overflows FP16" in g["reason"]
                continue
            assert g["file"] in manifest["files"] and (models / g["file"]).is_file(), (precision, graph)
            onnx.checker.check_model(onnx.load(str(models / g["file"])), full_check=True)
            if graph in ("encoder", "decoder_supervised"):
                assert g["quality"]["ok"], (precision, graph, g["quality"])
    assert manifest["precisions"]["int8"]["graphs"]["encoder"]["file"] == "encoder_int8.onnx"
    # The default method, auto: every method tried per graph; the winner keeps the most INT8
    # weights within the selection bar, the most accurate among equals.
    for section in ("int8", "int8u8"):
        assert manifest["precisions"][section]["method"] == "auto"
        for graph in ("encoder", "decoder_supervised"):
            g = manifest["precisions"][section]["graphs"][graph]
            tried = g["methods_tried"]
            assert set(tried) == {"max", "percentile", "entropy"} and g["method"] in tried
            # The file written is the winner's: its INT8 weights, counted here in the file itself, are
            # what the winner recorded, and no candidate meeting the bar kept more.
            model = onnx.load(str(models / g["file"])) if g["file"] != f"{graph}.onnx" else None
            weights = {t.name: t.data_type for t in model.graph.initializer} if model else {}
            in_file = sum(1 for n in (model.graph.node if model else [])
                          if n.op_type == "DequantizeLinear" and weights.get(n.input[0]) == onnx.TensorProto.INT8)
            assert in_file == tried[g["method"]]["int8_weights"], (section, graph)
            assert in_file >= max(t["int8_weights"] for t in tried.values() if t["ok"]), (section, graph, tried)

    out = tmp_path / "accuracy"
    assert main(["accuracy", "--models", str(models), "--audio", str(wavs), "-o", str(out)]) == 0
    report = json.loads((out / "accuracy.json").read_text())
    assert report["untrained"] is False and report["note"] is None  # not our synthetic pack
    # No landmarks on this basis: end to end is held to the params bar (measured 7.4e-4 FP16, 8.6e-3 INT8).
    assert report["failures"] == []
    assert not report["precisions"]["fp16"]["held_out"] and report["precisions"]["int8"]["held_out"]
    for precision, result in report["precisions"].items():
        assert result["encoder"]["ok"], (precision, result["encoder"])
        row = result["decoder_supervised"]
        bar = BARS["fp16" if precision == "fp16" else "int8"]["params"]  # int8u8: the INT8 bar
        assert row["ok"] and row["params_bar"] == bar and row["params_error"] <= bar
        assert row["end_to_end"]["measure"] == "params rel. error" and row["end_to_end"]["bar"] == bar
        assert result["voice2mesh_supervised"]["ok"], result["voice2mesh_supervised"]
        assert row["are_change"] is None and f"the mesh has {N_VERTICES} vertices" in row["are_note"]
    text = (out / "accuracy.md").read_text()
    assert f"(*) int8 decoder_supervised: ARE not measured: the mesh has {N_VERTICES} vertices" in text
    assert "**fp16 was calibrated on these inputs: they are not held out.**" in text

    # The Predictor opens the files models.json lists for each precision (INT8 on the CPU: the u8
    # flavour) and its result stays within the bars of its encoder.
    wav = sorted(wavs.glob("*.wav"))[0]
    results = {}
    for precision in ("fp32", "fp16", "int8"):
        with Predictor(models, precision=precision, device="cpu") as p:
            section = {"fp32": None, "fp16": "fp16", "int8": "int8u8"}[precision]
            want = manifest["precisions"][section]["graphs"]["encoder"]["file"] if section else "encoder.onnx"
            assert p.models.encoder.path.name == want
            results[precision] = p.predict(wav)
    e32 = results["fp32"].embedding.astype(np.float64)
    for precision in ("fp16", "int8"):
        e = results[precision].embedding.astype(np.float64)
        cosine = e @ e32 / (np.linalg.norm(e) * np.linalg.norm(e32))
        assert cosine >= BARS[precision]["cosine"], (precision, cosine)
        assert results[precision].vertices.shape == (N_VERTICES, 3)
    capsys.readouterr()

    # Exported again (new FP32 files): the reduced-precision files of the earlier export go with the
    # manifest that listed them, so nothing can run them against the new weights.
    assert main(["export", "--release", str(release), "-o", str(models), "--pipeline", "supervised"]) == 0
    assert "removed the reduced-precision files of an earlier export: decoder_supervised_fp16.onnx" in capsys.readouterr().out
    assert not list(models.glob("*_fp16.onnx")) + list(models.glob("*_int8*.onnx"))
    assert "precisions" not in json.loads((models / "models.json").read_text())
    with pytest.raises(CmpError, match=f"^{models} has no int8 models"):
        Predictor(models, precision="int8", device="cpu")
