"""Facts about the machine a benchmark ran on, recorded beside every result (and where results go)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def gpu_name() -> str | None:
    """The first GPU nvidia-smi names, or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
        return names[0] if out.returncode == 0 and names else None
    except (OSError, subprocess.SubprocessError):
        return None


def _slug(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|cpu @.*$|processor", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40] or "unknown"


def machine_name(cores: int, gpu: str | None) -> str:
    """The results folder's name: ``gpu-<gpu>`` or ``cpu-<model>-<cores>c``."""
    if gpu:
        return f"gpu-{_slug(gpu)}"
    return f"cpu-{_slug(cpu_model())}-{cores}c"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    import numpy

    ort = _version("onnxruntime")
    if ort == "not installed":
        ort = _version("onnxruntime-gpu")
    return {"python": platform.python_version(), "numpy": numpy.__version__, "onnxruntime": ort,
            "torch": _version("torch"), "onnx": _version("onnx"), "scipy": _version("scipy"),
            "webrtcvad": _version("webrtcvad-wheels"), "soxr": _version("soxr"), "matplotlib": _version("matplotlib"),
            "psutil": _version("psutil")}


def git_revision() -> str:
    """The checkout's short commit, ``+dirty`` when tracked files changed."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def untrained_models(models: Path) -> bool | None:
    """Whether ``models`` comes from the synthetic (untrained) pack; None when it has no manifest."""
    from runtime.errors import ModelError
    from runtime.models_folder import ModelsFolder

    try:
        return ModelsFolder.read(models).untrained
    except ModelError:
        return None
