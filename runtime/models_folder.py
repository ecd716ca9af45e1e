"""The models folder contract: what ``cmp-face export`` writes and every other part reads. No torch.

A models folder holds::

    models.json                    the manifest: what was exported from what, every file's record
    triangles.npy                  (M, 3) int32, 0-based
    <graph>.onnx                   FP32: encoder, frontend, decoder_<pipeline>, voice2mesh_<pipeline>
    <graph>_<precision>.onnx       FP16 / INT8 (``int8u8``: the CPU flavour), listed under ``precisions``
    <graph>_<precision>_<target>.engine (+ .json sidecar)   TensorRT engines, listed under ``engines``

This module is the only one that spells the manifest's name or reads and writes it: the cache,
the runners, calibration, export, the Triton repository writer and the benchmarks all go through
:class:`ModelsFolder` and the functions here. Writes are all-or-nothing (temporary name, rename).

Every file is recorded as ``{"sha256", "size", "mtime_ns"}`` (format 2; format 1 recorded the sha256
alone and is still read). A file whose size and mtime match its record is taken as intact, so
opening a folder stays cheap; anything else is hashed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from runtime.atomic import write_json
from runtime.errors import ModelError

MANIFEST = "models.json"
FORMAT = 2
FORMATS = (1, FORMAT)
TRIANGLES = "triangles.npy"
PIPELINES = ("supervised", "unsupervised")
PRECISIONS = ("fp32", "fp16", "int8")
EXPORT_COMMAND = "'cmp-face export' (or python export/to_onnx.py)"
# The commands that write each precision's ONNX files.
PRECISION_COMMANDS = {
    "fp32": "cmp-face export --release RELEASE_DIR -o {models}",
    "fp16": "cmp-face calibrate --models {models} --precision fp16",  # or export ... --precision fp32,fp16
    "int8": "cmp-face calibrate --models {models} --audio SPEECH_DIR",
}
# What cmp-face calibrate / export --precision fp16 write beside the FP32 graphs.
REDUCED_PRECISION_FILE = re.compile(
    r"^(encoder|frontend|(decoder|voice2mesh)_(supervised|unsupervised))_(fp16|int8|int8u8)\.onnx$")
# Graphs every precision runs in FP32 (the log-mel frontend: its power spectrum overflows FP16).
FP32_ONLY = ("frontend",)
ENGINE_FILE = re.compile(r"^(?P<graph>.+)_(?P<precision>fp32|fp16|int8)_(?P<target>[A-Za-z0-9+-]+)\.engine$")


# ------------------------------------------------------------------ names
def check_pipeline(pipeline: object) -> str:
    if pipeline not in PIPELINES:
        raise ModelError(f"unknown pipeline {pipeline!r}: choose one of {', '.join(PIPELINES)}")
    return pipeline  # type: ignore[return-value]


def check_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision  # type: ignore[return-value]


def graphs(pipelines: tuple[str, ...] | list[str] = PIPELINES, frontend: bool = True) -> list[str]:
    """The graph names an export writes for ``pipelines``: encoder, [frontend,] decoder_<p>, voice2mesh_<p>."""
    names = ["encoder"] + (["frontend"] if frontend else [])
    return names + [f"{kind}_{check_pipeline(p)}" for p in pipelines for kind in ("decoder", "voice2mesh")]


def onnx_file(graph: str, precision: str) -> str:
    """The ONNX file of ``graph`` at ``precision``: ``encoder.onnx``, ``encoder_fp16.onnx``, ..."""
    check_precision(precision)
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}_{precision}.onnx"


def engine_target(compute_capability: tuple[int, int], hardware_compat: str = "none") -> str:
    """The target in an engine's name: ``sm<major><minor>`` of the GPU that built it, or
    ``ampere-plus`` for engines built for any Ampere or newer GPU."""
    return "ampere-plus" if hardware_compat == "ampere_plus" else "sm{}{}".format(*compute_capability)


def engine_file(graph: str, precision: str, target: str) -> str:
    return f"{graph}_{precision}_{target}.engine"


def sidecar_file(engine: str | Path) -> Path:
    """The JSON sidecar beside an engine: ``encoder_fp16_sm90.json``."""
    return Path(engine).with_suffix(".json")


# ------------------------------------------------------------------ file records
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict:
    """What ``models.json`` records about each file (format 2)."""
    st = Path(path).stat()
    return {"sha256": sha256(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def recorded_sha256(record: object, st: os.stat_result) -> str | None:
    """The sha256 a format-2 record (:func:`file_record`) holds, when the file's size and mtime
    still match it; else None (hash the file)."""
    if (isinstance(record, dict) and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns
            and isinstance(record.get("sha256"), str)):
        return record["sha256"]
    return None


def _regular(path: Path) -> os.stat_result:
    """``stat`` of a regular file (a FIFO or device named in a manifest would block or never end)."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{path}: not a regular file")
    return st


# ------------------------------------------------------------------ the manifest
def manifest_path(models: str | os.PathLike) -> Path:
    return Path(models) / MANIFEST


def write_manifest(models: str | os.PathLike, manifest: dict) -> None:
    """Write ``models.json`` all-or-nothing."""
    write_json(manifest_path(models), manifest)


def _validated(path: Path, manifest: object) -> dict:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ModelError(f"{path}: not a cmp-deploy models manifest (no 'files' table)")
    if manifest.get("format", FORMAT) not in FORMATS:
        raise ModelError(f"{path}: unknown format {manifest.get('format')!r} (this version reads "
                         f"{', '.join(map(str, FORMATS))}); export the models again")
    pipelines = manifest.get("pipelines", [])
    if not isinstance(pipelines, list) or any(p not in PIPELINES for p in pipelines):
        raise ModelError(f"{path}: 'pipelines' must list some of {', '.join(PIPELINES)}, found {pipelines!r}")
    for name in manifest["files"]:
        if Path(name).name != name or name in ("", ".", ".."):
            raise ModelError(f"{path}: file name {name!r} is not a plain name in the models folder")
    return manifest


class ModelsFolder:
    """A models folder and its validated manifest (read once, when opened)."""

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def read(cls, root: str | os.PathLike) -> "ModelsFolder":
        root = Path(root)
        if not root.is_dir():
            raise ModelError(f"{root}: models folder not found")
        path = manifest_path(root)
        try:
            _regular(path)
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelError(f"{path}: not found; is {root} a models folder written by {EXPORT_COMMAND}?") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path}: unreadable ({exc})") from None
        try:
            manifest = json.loads(text)
        except ValueError as exc:
            raise ModelError(f"{path}: not valid JSON ({exc})") from None
        return cls(root, _validated(path, manifest))

    # -------------------------------------------------------------- what it holds
    @property
    def path(self) -> Path:
        return manifest_path(self.root)

    @property
    def pipelines(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("pipelines", []))

    @property
    def untrained(self) -> bool:
        return bool(self.manifest.get("synthetic"))

    @property
    def n_vertices(self) -> int | None:
        n = self.manifest.get("n_vertices")
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    @property
    def files(self) -> dict:
        return self.manifest["files"]

    def require_pipelines(self, pipelines: list[str] | tuple[str, ...]) -> None:
        """Refuse pipelines this folder has no decoder for."""
        missing = [check_pipeline(p) for p in pipelines if p not in self.pipelines]
        if missing or not pipelines:
            raise ModelError(f"{self.root} holds no {', '.join(missing) or 'pipeline'} decoder "
                             f"(exported: {', '.join(self.pipelines) or 'none'})")

    def precision_file(self, graph: str, precision: str, cpu: bool = False) -> str:
        """The ONNX file that runs ``graph`` at ``precision``, as ``models.json`` lists it (calibration
        may point a graph at a higher-precision file when no layer of it meets the quality bar); on
        the CPU, INT8 prefers the uint8-activation flavour (``int8u8``) where one was written. Files
        not listed there are found by name (``encoder_fp16.onnx``)."""
        sections = self.manifest.get("precisions") or {}
        for section in (["int8u8"] if cpu and precision == "int8" else []) + [precision]:
            entry = ((sections.get(section) or {}).get("graphs") or {}).get(graph)
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                self._check_same_source(entry, section, precision)
                if Path(entry["file"]).name != entry["file"]:
                    raise ModelError(f"{self.path}: {section} file {entry['file']!r} is not a plain name")
                return entry["file"]
        return onnx_file(graph, "fp32" if graph in FP32_ONLY else precision)

    def _check_same_source(self, entry: dict, section: str, precision: str) -> None:
        """Refuse a reduced-precision file made from another FP32 file than the folder's own (the FP32
        models were exported again since): it would silently run the old weights."""
        record = self.files.get(entry.get("from"))
        have = record.get("sha256") if isinstance(record, dict) else record
        want = entry.get("from_sha256")
        if isinstance(have, str) and isinstance(want, str) and have != want:
            raise ModelError(f"{entry['file']} ({section}) was made from an earlier {entry['from']} than the one this "
                             f"models folder now holds (exported again since); make the {precision} models again: "
                             f"{PRECISION_COMMANDS[precision].format(models='MODELS')}")

    def require_files(self, precision: str, graphs_: list[str], cpu: bool = False) -> dict[str, str]:
        """``{graph: file}`` at ``precision`` as the folder lists them; a missing reduced-precision
        file is refused with the command that makes it."""
        files = {g: self.precision_file(g, precision, cpu) for g in graphs_}
        missing = [f for f in files.values() if not (self.root / f).is_file()]
        if precision != "fp32" and missing:
            raise ModelError(f"{self.root} has no {precision} models ({', '.join(missing)} not found); make them "
                             f"with: {PRECISION_COMMANDS[precision].format(models=self.root)}")
        return files

    def file_sha256(self, name: str) -> str:
        """The sha256 of ``name``: the manifest's record when its size and mtime still match, else hashed."""
        path = self.root / name
        return recorded_sha256(self.files.get(name), _regular(path)) or sha256(path)

    def triangles(self) -> np.ndarray:
        return load_triangles(self.root / TRIANGLES, self.n_vertices)

    # -------------------------------------------------------------- writing
    def record(self, names: list[str]) -> None:
        """Record ``names`` under ``files`` in the manifest's own format (format 1: sha256 strings)."""
        as_record = self.manifest.get("format", FORMAT) != 1 or any(isinstance(v, dict) for v in self.files.values())
        for name in names:
            self.files[name] = file_record(self.root / name) if as_record else sha256(self.root / name)

    def set_precision(self, section: str, entry: dict, names: list[str], drop: tuple[str, ...] = ()) -> None:
        """Add ``names`` to ``files`` and ``entry`` as ``precisions[section]``; remove the files
        ``drop`` (left by an earlier run, now superseded) from both disk and ``files``; write."""
        for name in drop:
            self.files.pop(name, None)
        self.record(names)
        self.manifest.setdefault("precisions", {})[section] = entry
        self.write()
        for name in drop:  # after the manifest stops naming them
            (self.root / name).unlink(missing_ok=True)

    def add_engine(self, sidecar: dict) -> None:
        """List an engine (from its sidecar's data) in the ``engines`` table and write."""
        engine = sidecar["engine"]
        self.manifest.setdefault("engines", {})[engine["file"]] = {
            "graph": sidecar["graph"], "precision": sidecar["precision"],
            "sidecar": sidecar_file(engine["file"]).name,
            "sha256": engine["sha256"], "size": engine["size"],
            "tensorrt": sidecar["tensorrt"]["version"], "gpu": sidecar["gpu"],
            "hardware_compatibility": sidecar["hardware_compatibility"]}
        self.write()

    def write(self) -> None:
        write_manifest(self.root, self.manifest)


def remove_reduced_precision_files(models: Path) -> list[str]:
    """Delete the FP16/INT8 files of an earlier export (made from other FP32 files); their names."""
    stale = sorted(p.name for p in Path(models).glob("*.onnx") if REDUCED_PRECISION_FILE.match(p.name))
    for name in stale:
        (Path(models) / name).unlink()
    return stale


# ------------------------------------------------------------------ integrity
def check_models(models: Path, upgrade: bool = True) -> list[str]:
    """What is wrong with a finished models folder, one phrase per problem (empty: intact).

    A file whose size and mtime match ``models.json`` is taken as intact; one whose mtime alone
    changed is re-hashed (and, if unchanged, its new mtime recorded when ``upgrade``). A format-1
    manifest (hashes only) is checked by hashing every file and, when ``upgrade``, rewritten as
    format 2 so the next check is cheap. Special files (a FIFO, a device) are refused unopened.
    """
    path = manifest_path(models)
    try:
        _regular(path)
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"{MANIFEST} is missing"]
    except ModelError:
        return [f"{MANIFEST} is not a regular file"]
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST} is unreadable ({type(exc).__name__})"]
    files = manifest.get("files") if isinstance(manifest, dict) else None
    version = manifest.get("format") if isinstance(manifest, dict) else None
    if version not in FORMATS or not isinstance(files, dict) or not files:
        return [f"{MANIFEST} has an unknown format ({version!r})"]
    problems, changed = [], False
    for name, record in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            problems.append(f"{MANIFEST} names {name!r}, which is not a file of this folder")
            continue
        file = Path(models) / name
        if version == 1:
            record = {"sha256": record}
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            problems.append(f"{MANIFEST} records no sha256 for {name}")
            continue
        try:
            st = file.stat()
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{name} is not a regular file")
        elif "size" in record and st.st_size != record["size"]:
            problems.append(f"{name} has {st.st_size} bytes, {MANIFEST} says {record['size']}")
        elif st.st_mtime_ns != record.get("mtime_ns"):
            try:
                digest = sha256(file)
            except OSError as exc:
                problems.append(f"{name} is unreadable ({exc.strerror or type(exc).__name__})")
                continue
            if digest != record["sha256"]:
                problems.append(f"{name} does not match its sha256 in {MANIFEST}")
            else:
                files[name] = record | {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
                changed = True
    if changed and upgrade and not problems:
        try:
            write_manifest(models, manifest | {"format": FORMAT, "files": files})
        except OSError:
            pass  # a read-only cache: checked again (by hash) next time
    return problems


def load_triangles(path: Path, n_vertices: int | None) -> np.ndarray:
    if not path.is_file():
        raise ModelError(f"{path}: triangles file not found")
    try:
        tri = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path}: not a readable .npy file ({exc})") from exc
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.dtype != np.int32:
        raise ModelError(f"{path}: expected (M, 3) int32 triangles, found {tri.shape} {tri.dtype}")
    if n_vertices is not None and tri.size and (tri.min() < 0 or tri.max() >= n_vertices):
        raise ModelError(f"{path}: triangle indices outside 0..{n_vertices - 1}")
    return tri
