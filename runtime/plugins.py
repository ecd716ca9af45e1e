"""What the layers above the runtime register through package entry points (``setup.py``).

The runtime never imports ``calibration`` or ``export``: those packages register

* commands of ``cmp-face`` (group ``cmp_face.commands``: ``export``, ``build-engines``,
  ``calibrate``, ``accuracy``), each a :class:`Command` in a module that imports nothing heavy
  until the command runs, and
* the builder of the model cache's entries (group ``cmp_deploy.cache_builders``), called on a
  cache miss by :func:`runtime.cache.models_for`.

An entry point is loaded only when asked for, so a missing extra (torch, onnx) surfaces as one
clear error naming the extra and the command, never at start-up.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Protocol

from runtime.errors import CmpError

COMMANDS = "cmp_face.commands"
CACHE_BUILDERS = "cmp_deploy.cache_builders"


@dataclass(frozen=True)
class Command:
    """A ``cmp-face`` subcommand: its arguments and what runs it.

    ``run`` returns the exit status (or its result, for success); it imports what it needs when called, so that listing the
    commands never imports torch. ``extra`` names the pip extra those imports come from (an
    ImportError while running becomes "needs the <extra> extra"). ``prog``: the name errors are
    printed under, when the command is also a program of its own (``python -m calibration``).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], object]
    extra: str | None = None
    description: str | None = None
    prog: str | None = None


class CacheBuilder(Protocol):
    def __call__(self, entry: Path, release: Path | None, pipeline: str, epoch: str | int | None, seed: int,
                 progress: Callable[[str], None]) -> None: ...


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=group), key=lambda e: e.name)


def registered_commands() -> list[Command]:
    """The commands the installed packages register (export, calibration)."""
    found = []
    for point in _entry_points(COMMANDS):
        command = point.load()  # light modules: nothing heavy is imported here
        if not isinstance(command, Command) or command.name != point.name:
            raise CmpError(f"entry point {point.name} = {point.value} is not a cmp-face command")
        found.append(command)
    return found


def registered_command(name: str) -> Command:
    """One registered command by name (``python -m calibration.report`` runs ``accuracy``)."""
    for command in registered_commands():
        if command.name == name:
            return command
    raise CmpError(f"no '{name}' command is registered: is cmp-deploy installed (pip install -e .)?")


def cache_builder(command: str) -> CacheBuilder:
    """The registered builder of cache entries; ``command`` (the one that builds the missing entry)
    is named in the error when the builder cannot be loaded."""
    points = _entry_points(CACHE_BUILDERS)
    if not points:
        raise CmpError("building models needs the export package, which this installation does not register: "
                       f"pip install 'cmp-deploy[export]', then run {command}; or pass --models DIR")
    try:
        return points[0].load()
    except ImportError as exc:
        raise CmpError(f"building models needs the export extra ({exc.name} is missing): pip install "
                       f"'cmp-deploy[export]', then run {command}; or pass --models DIR") from exc
