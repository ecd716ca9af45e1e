"""All-or-nothing file output: write under a temporary name in the target folder, then rename.

A reader never sees a half-written file: either the old file or the complete new one. The
temporary name keeps the suffix, because numpy and OpenCV choose behaviour from it.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from runtime.errors import OutputError


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique name beside ``path`` with the same suffix (same filesystem: rename is atomic)."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (left as it was when nothing
    was written, e.g. a plot skipped without matplotlib), on failure it is removed."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def os_reason(exc: OSError) -> str:
    """An OSError's reason without the paths it names (ours may be temporary ones)."""
    return (exc.strerror or type(exc).__name__).lower() if isinstance(exc, OSError) else str(exc)


def check_writable(folder: str | os.PathLike) -> None:
    """Refuse an output folder that could not be written, before any work is done: the nearest
    existing folder on its path must take a new entry (tried: a hidden folder made and removed at
    once; permission bits alone would not show a read-only file system, or anything to root)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"{folder}: cannot be made ({base} is not a folder)")
    probe = base / f".cmp-face-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({os_reason(exc)})") from None


def write_json(path: str | os.PathLike, data) -> None:
    """``data`` as indented JSON, all-or-nothing."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


class OutputFolder:
    """Stage a set of files in a hidden folder inside ``root``, then move them all into place.

    Used by ``cmp-face predict``: every output of one input is written to the staging folder;
    only when all of them are complete are they renamed into ``root``. Files of ours left by an
    earlier run (``owned`` names) that this run does not write are removed at the same moment, so
    the folder never mixes two runs. Files with other names are never touched.
    """

    def __init__(self, root: Path, owned: tuple[str, ...]) -> None:
        self.root = Path(root)
        self.owned = owned
        self.staging: Path | None = None

    def __enter__(self) -> "OutputFolder":
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"{self.root}: exists and is not a folder")
        staging = self.root / f".cmp-face-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot write there ({os_reason(exc)})") from None
        self.staging = staging
        return self

    def path(self, name: str) -> Path:
        """Where to write output ``name`` now (inside the staging folder)."""
        assert self.staging is not None and name in self.owned, name
        return self.staging / name

    def commit(self) -> tuple[list[Path], list[str], list[str]]:
        """Move the staged files into place. Returns (written paths, replaced names, removed names).

        Every destination is checked before the first rename (a folder or other non-file in the
        way is refused, nothing changes); the files replaced are kept aside until every new one is
        in place, and put back if a rename fails midway."""
        assert self.staging is not None
        new = sorted(p.name for p in self.staging.iterdir())
        removed = [n for n in self.owned if n not in new and (self.root / n).is_file()]
        blocked = [n for n in new if os.path.lexists(self.root / n) and not (self.root / n).is_file()]
        if blocked:
            raise OutputError(f"{self.root / blocked[0]}: exists and is not a file; move it away and run again "
                              "(nothing was written)")
        replaced = [n for n in new if (self.root / n).exists()]
        aside = self.staging / ".replaced"
        aside.mkdir()
        for name in replaced:  # a second name for each file replaced: readers never see it missing
            try:
                os.link(self.root / name, aside / name)
            except OSError:
                shutil.copy2(self.root / name, aside / name)
        done: list[str] = []
        try:
            for name in new:
                os.replace(self.staging / name, self.root / name)
                done.append(name)
        except OSError as exc:
            for name in done:
                if name in replaced:
                    os.replace(aside / name, self.root / name)
                else:
                    (self.root / name).unlink(missing_ok=True)
            raise OutputError(f"{self.root}: cannot move the outputs into place ({os_reason(exc)}; nothing "
                              "was changed)") from None
        for name in removed:
            (self.root / name).unlink(missing_ok=True)
        return [self.root / n for n in new], replaced, removed

    def __exit__(self, kind, exc, tb) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            # Name the output the user asked for, not our hidden staging folder.
            name = Path(exc.filename).name if exc.filename else None
            where = self.root / name if name and name in self.owned else self.root
            raise OutputError(f"{where}: cannot be written ({os_reason(exc)})") from None
