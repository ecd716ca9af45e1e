"""Models folders made for a test from the session's synthetic models."""
from __future__ import annotations

import json
import os
from pathlib import Path

def supervised_folder(models_dir: Path, tmp: Path) -> Path:
    """The FP32 supervised graphs of the shared fixture, linked into a folder of our own."""
    out = tmp / "models"
    out.mkdir()
    for name in ("encoder.onnx", "decoder_supervised.onnx", "frontend.onnx", "voice2mesh_supervised.onnx",
                 "triangles.npy"):
        os.symlink(models_dir / name, out / name)
    manifest = json.loads((models_dir / "models.json").read_text())
    manifest["pipelines"] = ["supervised"]
    (out / "models.json").write_text(json.dumps(manifest))
    return out


def int8_keeping_the_decoder_fp32(models_dir: Path, tmp: Path) -> Path:
    """:func:`supervised_folder` as ``calibrate`` leaves it when no decoder layer meets the INT8 bar:
    ``precisions.int8`` lists an INT8 encoder and fused graph (stand-ins: the FP32 graphs with
    another doc string, so that their bytes differ) and the FP32 file for the decoder."""
    import onnx

    from runtime.models_folder import ModelsFolder

    out = supervised_folder(models_dir, tmp)
    for graph in ("encoder", "voice2mesh_supervised"):
        model = onnx.load(str(out / f"{graph}.onnx"))
        model.doc_string = "INT8 stand-in"
        onnx.save(model, str(out / f"{graph}_int8.onnx"))
    folder = ModelsFolder.read(out)
    graphs = {g: {"file": f"{g}_int8.onnx", "from": f"{g}.onnx", "from_sha256": folder.file_sha256(f"{g}.onnx")}
              for g in ("encoder", "voice2mesh_supervised")}
    graphs["decoder_supervised"] = {"file": "decoder_supervised.onnx", "from": "decoder_supervised.onnx"}
    folder.set_precision("int8", {"method": "max", "graphs": graphs}, ["encoder_int8.onnx",
                                                                        "voice2mesh_supervised_int8.onnx"])
    return out
