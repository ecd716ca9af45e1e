"""The README's Python snippet runs as copied (in a fresh folder, on the test session's cache)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_python_api_snippet_runs_as_copied(models_dir, cache_dir, tmp_path):
    snippet = next(b for b in python_blocks() if "Predictor.from_cache" in b)
    # The snippet itself, then a check that it did what its comments say.
    check = ("\nassert result.vertices.shape == (53215, 3) and image.dtype.name == 'uint8'"
             "\nassert len(results) == 2 and predictor.untrained\nprint('snippet ok')\n")
    done = subprocess.run([sys.executable, "-c", snippet + check], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600, env={**os.environ, "CMP_DEPLOY_CACHE": str(cache_dir),
                                            "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("snippet ok")
    assert "building" not in done.stderr  # found the cached models
    assert (tmp_path / "face.obj").is_file() and (tmp_path / "face.ply").is_file()
