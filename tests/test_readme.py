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


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_the_readme_gives_the_cpu_wheel_line_for_torch():
    assert ("`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`"
            in " ".join(readme().split()))


def test_the_cache_size_the_readme_states_is_the_size_of_the_synthetic_entry(models_dir):
    """In MB of 10^6 bytes, as 'cmp-face cache list' prints it, within 5 %."""
    stated = float(re.search(r"entry takes (\d+) MB \(MB = 10\^6 bytes", " ".join(readme().split()))[1])
    size = sum(p.stat().st_size for p in models_dir.parent.rglob("*") if p.is_file())
    assert abs(size / 1e6 - stated) <= 0.05 * stated, size


def test_the_readme_and_the_trtexec_script_say_its_engines_are_refused(tmp_path):
    from export.to_trt import Options, plan, trtexec_script
    from tests.helpers.tiny_graphs import write_tiny_models

    text = " ".join(readme().split())
    assert "Engines that `trtexec.sh` builds have **no sidecar, so our runtime refuses them**" in text
    models = write_tiny_models(tmp_path / "m")
    script = trtexec_script(plan(models, Options(precision="fp32")), Options(precision="fp32"), models)
    assert "cmp-deploy's runtime refuses an engine without one" in " ".join(script.replace("#", "").split())


def test_the_readme_names_the_fast_subset_and_the_slow_marker_exists():
    text = " ".join(readme().split())
    assert '`python -m pytest -q -m "not slow"`' in text
    assert 'markers = ["slow:' in (ROOT / "pyproject.toml").read_text()


def test_the_readme_says_the_untrained_face_image_is_noise():
    assert "from the synthetic pack's untrained generator it is colour noise, not a face" in " ".join(readme().split())
