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
