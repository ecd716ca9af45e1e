"""cmp-face doctor: versions without importing torch, the Sim3DR build, the cache's state with fixes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def doctor(cache: Path) -> subprocess.CompletedProcess:
    # A subprocess: the check must not import torch, which sys.modules then shows.
    code = ("import sys; from runtime.cli import main; code = main(['doctor']); "
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "CMP_DEPLOY_CACHE": str(cache)})


def test_doctor_on_a_healthy_install(tmp_path):
    done = doctor(tmp_path / "empty-cache")
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines[0].startswith("cmp-deploy ")
    assert any(line.startswith("  onnxruntime providers: ") and "CPUExecutionProvider" in line for line in lines)
    assert "  Sim3DR extension: compiled" in lines
    assert "  OBJ formatter extension: compiled" in lines
    assert f"  model cache: {tmp_path / 'empty-cache'} (0 entries)" in lines
    assert lines[-2:] == ["no problems found", "torch not imported"]


def test_doctor_names_each_problem_with_its_fix(tmp_path):
    cache = tmp_path / "cache"
    broken = cache / "synthetic-v2-seed0" / "models"
    broken.mkdir(parents=True)  # a finished-looking entry without its manifest
    done = doctor(cache)
    assert done.returncode == 2
    assert "    synthetic-v2-seed0: synthetic, incomplete, 0.0 kB" in done.stdout.splitlines()
    assert ("  PROBLEM: cache entry synthetic-v2-seed0 is incomplete\n"
            "    fix: cmp-face cache clear synthetic-v2-seed0  (it is rebuilt on next use)") in done.stdout
