"""``cmp-face doctor``: what is installed, what the machine has, and a fix for each problem found.

Versions come from package metadata, so the check never imports torch or TensorRT (slow, and
they may be broken: that is what the doctor is for).
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

# (what we show, distributions that provide it: the first one installed is reported)
PACKAGES = (
    ("numpy", ("numpy",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("opencv", ("opencv-python-headless", "opencv-python")),
    ("soundfile", ("soundfile",)),
    ("soxr", ("soxr",)),
    ("webrtcvad", ("webrtcvad-wheels", "webrtcvad")),
    ("torch (export only)", ("torch",)),
    ("onnx (export only)", ("onnx",)),
    ("tensorrt", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-lean-cu13-bindings",
                  "tensorrt-lean-cu12-bindings")),
    ("cuda-python", ("cuda-python", "cuda-bindings")),
    ("sounddevice (mic)", ("sounddevice",)),
)


@dataclass
class Problem:
    what: str
    fix: str


def _version(dists: tuple[str, ...]) -> tuple[str, str] | None:
    for dist in dists:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _gpus() -> list[str]:
    """GPU names and driver from nvidia-smi, when there is one."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def report() -> tuple[list[str], list[Problem]]:
    """The report's lines and the problems found (each with its fix, also in the lines)."""
    from runtime import __version__

    lines = [f"cmp-deploy {__version__}", f"  python: {sys.version.split()[0]} ({platform.machine()}, "
                                          f"{platform.system()})"]
    problems: list[Problem] = []
    for name, dists in PACKAGES:
        found = _version(dists)
        lines.append(f"  {name}: {found[1] + (f' ({found[0]})' if found[0] != dists[0] else '') if found else 'not installed'}")
    if _version(("onnxruntime",)) and _version(("onnxruntime-gpu",)):
        problems.append(Problem("onnxruntime and onnxruntime-gpu are both installed (they share one module)",
                                "pip uninstall -y onnxruntime && pip install --force-reinstall onnxruntime-gpu"))
    try:
        import onnxruntime as ort

        lines.append(f"  onnxruntime providers: {', '.join(ort.get_available_providers())}")
    except ImportError as exc:
        problems.append(Problem(f"onnxruntime does not import ({exc})", "pip install onnxruntime"))
    gpus = _gpus()
    lines.append(f"  GPU: {'; '.join(gpus) if gpus else 'none found (nvidia-smi absent or no device)'}")

    def sim3dr() -> None:
        import Sim3DR  # noqa: F401  (imports its compiled extension)

    def meshtext() -> None:
        import runtime._meshtext  # noqa: F401  (the OBJ writer's compiled formatter)

    for load, label, what in [(sim3dr, "Sim3DR extension", "the Sim3DR C++ extension"),
                              (meshtext, "OBJ formatter extension",
                               "the OBJ writer's C++ extension (runtime._meshtext)")]:
        try:
            load()
            lines.append(f"  {label}: compiled")
        except ImportError as exc:
            lines.append(f"  {label}: NOT compiled")
            problems.append(Problem(f"{what} is not built ({exc})",
                                    "pip install -e . from the repository root (needs a C++ compiler)"))
    lines += _cache_lines(problems)
    if problems:
        lines.append(f"{len(problems)} problem(s):")
        lines += [f"  PROBLEM: {p.what}\n    fix: {p.fix}" for p in problems]
    else:
        lines.append("no problems found")
    return lines, problems


def _cache_lines(problems: list[Problem]) -> list[str]:
    from runtime.cache import cache_root, entries, format_size

    root = cache_root()
    found = entries()
    lines = [f"  model cache: {root} ({len(found)} entr{'y' if len(found) == 1 else 'ies'})"]
    for entry in found:
        lines.append(f"    {entry.name}: {entry.kind}, {entry.state}, {format_size(entry.size)}")
        if entry.state != "ok":
            problems.append(Problem(f"cache entry {entry.name} is {entry.state}",
                                    f"cmp-face cache clear {entry.name}  (it is rebuilt on next use)"))
    return lines
