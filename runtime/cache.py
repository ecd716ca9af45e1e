"""The user's cache of models folders: find a finished entry, check it, list and clear. No torch.

Layout under :func:`cache_root`::

    synthetic-v<pack>-seed<seed>/{release,models}   the UNTRAINED synthetic pack and its models
    release-<pipeline>-<key>/models                 models exported from a release folder
                                                    (<key> hashes the release files it needs)

An entry is built under ``<entry>.partial-<pid>`` and renamed when complete, so a folder without
that suffix is finished. Building needs torch: it is done by the builder the export package
registers (:mod:`runtime.plugins`), or by one the caller hands to :func:`models_for`. Looking an
entry up reads its manifest (:mod:`runtime.models_folder`) and compares each file's size and mtime
with what it records, re-hashing a file only when they differ, so opening a cached entry stays cheap.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from runtime.atomic import write_json
from runtime.errors import CmpError, ModelError
from runtime.models_folder import check_models, file_record, manifest_path, recorded_sha256
from runtime.plugins import CacheBuilder, cache_builder
from runtime.release_files import ReleaseFolder

SYNTHETIC_PACK_VERSION = 2  # bump when the synthetic pack changes: its entries are then rebuilt (2: 3DDFA's mean pose)
KINDS = ("synthetic", "release")
STATES = ("ok", "corrupt", "incomplete", "building", "stale-partial")
# A partial folder is stale once its process is gone. Process ids are reused, so one left this
# long without a change is stale whoever holds its pid now (a build takes minutes).
STALE_AFTER_S = 24 * 3600
HASHES = "file-hashes.json"  # remembered_sha256's memo, in the cache root
MAX_REMEMBERED = 256
_PARTIAL = re.compile(r"^(?P<base>.+)\.partial-(?P<pid>\d+)$")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cache_root() -> Path:
    """``$CMP_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/cmp-deploy``, else ``~/.cache/cmp-deploy``."""
    if os.environ.get("CMP_DEPLOY_CACHE"):
        return Path(os.environ["CMP_DEPLOY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cmp-deploy"


def synthetic_entry(seed: int = 0) -> Path:
    return cache_root() / f"synthetic-v{SYNTHETIC_PACK_VERSION}-seed{seed}"


def release_entry(release: str | Path, pipeline: str, epoch: str | int | None = None) -> Path:
    """The entry for one pipeline of a release folder: its name hashes the files it is built from."""
    folder = ReleaseFolder.locate(release, pipeline, epoch)
    key = hashlib.sha256(repr(sorted(folder.hashes(remembered_sha256).items())).encode()).hexdigest()[:16]
    return cache_root() / f"release-{pipeline}-{key}"


def remembered_sha256(paths: list[Path]) -> dict[Path, str]:
    """sha256 of each file, remembered in the cache (``HASHES``) by absolute path, size and mtime,
    as models.json records its own files: a release folder (~100-300 MB) is hashed once, not on
    every ``predict --release``. The memo keeps the newest ``MAX_REMEMBERED`` files; a memo that
    cannot be read or written only costs the hashing."""
    memo_path = cache_root() / HASHES
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    memo = memo if isinstance(memo, dict) else {}
    found, changed = {}, False
    for path in paths:
        key = str(path.resolve())
        known = recorded_sha256(memo.get(key), path.stat())
        if known:
            found[path] = known
            continue
        memo.pop(key, None)  # re-inserted last: the newest stay
        memo[key] = file_record(path)
        found[path] = memo[key]["sha256"]
        changed = True
    if changed:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(memo_path, dict(list(memo.items())[-MAX_REMEMBERED:]))
        except OSError:
            pass
    return found


def partial_path(entry: Path) -> Path:
    """Where this process builds (or deletes) ``entry`` before renaming it."""
    return entry.with_name(f"{entry.name}.partial-{os.getpid()}")


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    kind: str        # "synthetic" or "release"
    size: int        # bytes on disk (sum of file sizes)
    state: str       # one of STATES
    created: datetime
    problems: tuple[str, ...] = ()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def _walk(path: Path) -> tuple[int, float]:
    """(total bytes of the files under ``path``, newest mtime of anything there)."""
    total, newest = 0, path.lstat().st_mtime
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest


def _entry(path: Path) -> Entry | None:
    match = _PARTIAL.match(path.name)
    base = match["base"] if match else path.name
    kind = next((k for k in KINDS if base.startswith(f"{k}-")), None)
    if kind is None or path.is_symlink() or not path.is_dir():
        return None
    size, newest = _walk(path)
    problems: list[str] = []
    if match:
        pid = int(match["pid"])
        stale = pid != os.getpid() and (not _pid_alive(pid) or time.time() - newest > STALE_AFTER_S)
        state = "stale-partial" if stale else "building"
    elif not manifest_path(path / "models").is_file():
        state = "incomplete"  # renamed into place only once complete: someone removed files
    else:
        problems = check_models(path / "models")
        state = "corrupt" if problems else "ok"
    created = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return Entry(path.name, path, kind, size, state, created, tuple(problems))


def entries(partial_only: bool = False) -> list[Entry]:
    """Every cache entry (finished or not) with its state, sorted by name."""
    root = cache_root()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if partial_only and not _PARTIAL.match(path.name):
            continue
        try:
            found.append(_entry(path))
        except FileNotFoundError:
            pass  # removed by another process meanwhile
    return [e for e in found if e is not None]


def _remove(path: Path) -> None:
    """Rename out of the way first (other processes then never see half an entry), then delete;
    if deleting is interrupted, what is left is a stale partial folder removed later."""
    match = _PARTIAL.match(path.name)
    doomed = partial_path(path.with_name(match["base"]) if match else path)
    if doomed != path:
        try:
            path.rename(doomed)
        except FileNotFoundError:
            return  # removed by someone else meanwhile
    shutil.rmtree(doomed, ignore_errors=True)


def clear(names: list[str] | None = None) -> list[Path]:
    """Remove the named entries (all finished entries and stale partial folders when ``names`` is
    None or empty); return the paths removed. Unknown names or a build in progress change nothing."""
    found = {e.name: e for e in entries()}
    if not names:
        targets = [e for e in found.values() if e.state != "building"]
    else:
        unknown = [n for n in dict.fromkeys(names) if n not in found]
        if unknown:
            raise CmpError(f"no cache entry named {', '.join(unknown)} in {cache_root()} "
                           "(see 'cmp-face cache list')")
        targets = [found[n] for n in dict.fromkeys(names)]
        busy = [e.name for e in targets if e.state == "building"]
        if busy:
            raise CmpError(f"{', '.join(busy)} is being built by a running process: wait for it to "
                           "finish (or stop that process) and clear it then")
    for entry in targets:
        _remove(entry.path)
    return [e.path for e in targets]


def remove_stale_partials(progress: Callable[[str], None] | None = None) -> list[Path]:
    """Delete the partial folders that interrupted builds left behind."""
    stale = [e for e in entries(partial_only=True) if e.state == "stale-partial"]
    for entry in stale:
        _remove(entry.path)
    if stale and progress:
        progress(f"removed {len(stale)} unfinished build folder{'s' if len(stale) > 1 else ''} "
                 f"left by interrupted runs ({format_size(sum(e.size for e in stale))})")
    return [e.path for e in stale]


def format_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def build_command(release: Path | None, pipeline: str, epoch: str | int | None = None) -> str:
    """The command that builds the entry of ``release`` (None: the synthetic pack)."""
    if release is None:
        return "'cmp-face cache build'"
    epoch_words = f" --epoch {epoch}" if epoch is not None else ""
    return f"'cmp-face cache build --release {release} --pipeline {pipeline}{epoch_words}'"


def models_for(release: Path | None, pipeline: str, epoch: str | int | None = None,
               progress: Callable[[str], None] = _stderr, *, seed: int = 0,
               build: CacheBuilder | None = None) -> Path:
    """The finished, checked models folder for ``release`` (None: the synthetic pack), built
    first when missing by ``build``, else by the builder the export package registers (it needs
    the export extra; :mod:`runtime.plugins`). A damaged synthetic entry is rebuilt; a damaged
    release entry is reported with the command that rebuilds it."""
    remove_stale_partials(progress)
    entry = synthetic_entry(seed) if release is None else release_entry(release, pipeline, epoch)
    models = entry / "models"
    if entry.is_dir():
        problems = check_models(models)
        if not problems:
            return models
        damage = "; ".join(problems)
        if release is not None:
            raise ModelError(f"the cached models in {entry} are damaged ({damage}); rebuild them with "
                             f"'cmp-face cache clear {entry.name}' and run this command again")
        progress(f"the cached synthetic models in {entry} are damaged ({damage}): rebuilding them")
        _remove(entry)
    release = None if release is None else Path(release)
    build = build or cache_builder(build_command(release, pipeline, epoch))
    build(entry, release, pipeline, epoch, seed, progress)
    return models


def resolve_models(models: str | Path | None, release: str | Path | None, pipeline: str,
                   epoch: str | int | None = None, progress: Callable[[str], None] = _stderr) -> Path:
    """A models folder given as is (``--models``), else the cache's entry for ``release`` or, without
    one, the synthetic pack (built when missing or damaged)."""
    if models:
        return Path(models)
    return models_for(None if release is None else Path(release), pipeline, epoch, progress)
