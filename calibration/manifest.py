"""Writing into a models folder: model files and ``models.json`` both all-or-nothing.

``models.json`` gains a ``precisions`` section (``{"fp16": {...}, "int8": {...}}``, one entry
per written graph with its file, source hash, islands, ranges and quality) and each written
file is listed under ``files`` in the manifest's own record format (a sha256 string, or a
``{"sha256", "size", "mtime_ns"}`` record), so cache integrity checks cover it.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx

from runtime.atomic import replacing
from runtime.errors import ModelError
from runtime.release_files import sha256  # noqa: F401  (used here and by fp16/int8)

MANIFEST = "models.json"


def write_model(model: onnx.ModelProto, path: Path) -> None:
    with replacing(path) as tmp:
        onnx.save(model, str(tmp))


def read_manifest(models: Path) -> dict:
    path = Path(models) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: not found; is {models} a models folder written by cmp-face export?") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ModelError(f"{path}: not a cmp-deploy models manifest (no 'files' table)")
    return manifest


def register_files(models: Path, names: list[str], section: str, entry: dict, drop: tuple[str, ...] = ()) -> dict:
    """Add ``names`` to ``files`` and ``entry`` as ``precisions[section]``; remove the files
    ``drop`` (left by an earlier run, now superseded) from both disk and ``files``; write atomically."""
    models = Path(models)
    manifest = read_manifest(models)
    files = manifest["files"]
    for name in drop:
        files.pop(name, None)
    as_record = any(isinstance(v, dict) for v in files.values())
    for name in names:
        digest = sha256(models / name)
        if as_record:
            st = (models / name).stat()
            files[name] = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        else:
            files[name] = digest
    manifest.setdefault("precisions", {})[section] = entry
    with replacing(models / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    for name in drop:  # after the manifest stops naming them
        (models / name).unlink(missing_ok=True)
    return manifest
