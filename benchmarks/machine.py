"""Facts about the machine a benchmark ran on, recorded beside every result (and where results go)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import time
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


# ----------------------------------------------------------------------------- load
def cpu_ticks() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return (total - idle) / hz, total / hz


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def busy_share(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy (any process) over ``seconds``."""
    b0, t0 = cpu_ticks()
    time.sleep(seconds)
    b1, t1 = cpu_ticks()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else float("nan")


def wait_idle(limit_s: float, threshold: float = 0.10) -> dict:
    """Wait (at most ``limit_s``) until the machine is quiet: under ``threshold`` of the CPUs
    busy for 3 consecutive seconds. Returns what was seen."""
    start, quiet, last = time.perf_counter(), 0, float("nan")
    announced = False
    while True:
        last = busy_share(1.0)
        quiet = quiet + 1 if last < threshold else 0
        if quiet >= 3:
            return {"waited_s": round(time.perf_counter() - start, 1), "quiet": True, "busy_share": last}
        if time.perf_counter() - start > limit_s:
            return {"waited_s": round(time.perf_counter() - start, 1), "quiet": False, "busy_share": last}
        if not announced and last >= threshold:
            print(f"  waiting for a quiet machine ({100 * last:.0f}% of the CPUs busy; at most {limit_s:.0f} s)",
                  flush=True)
            announced = True
