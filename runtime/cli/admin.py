"""``cmp-face cache`` and ``cmp-face doctor``: the model cache and the installation."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli.args import EXIT_ERROR
from runtime.errors import CmpError
from runtime.models_folder import PIPELINES
from runtime.plugins import Command


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_doctor(args: argparse.Namespace) -> int:
    from runtime.doctor import report

    lines, problems = report()
    print("\n".join(lines))
    return EXIT_ERROR if problems else 0


def run_cache(args: argparse.Namespace) -> int:
    """'cache list': a table of the cached models folders; 'cache clear [NAME ...]': remove them;
    'cache build': build the entry of --release (or the synthetic pack) now."""
    from runtime.cache import cache_root, clear, entries, format_size, models_for

    root = cache_root()
    if args.action == "build":
        if args.names:
            raise CmpError("'cache build' takes no names: give --release DIR (default: the synthetic pack)")
        models = models_for(args.release, args.pipeline, args.epoch, _progress)
        print(f"cached models: {models}")
        return 0
    if args.release is not None or args.epoch is not None:
        raise CmpError(f"--release and --epoch apply to 'cache build', not 'cache {args.action}'")
    if args.all and (args.action != "clear" or args.names):
        raise CmpError("--all applies to 'cache clear' without names")
    if args.action == "clear":
        found = entries()
        sizes = {e.path: e.size for e in found}
        if not args.names and not args.all:
            doomed = [e for e in found if e.state != "building"]
            if doomed and not _confirmed(f"remove all {len(doomed)} cached model folders in {root} "
                                         f"({format_size(sum(e.size for e in doomed))})? [y/N] "):
                raise CmpError("give the names of the entries to remove (see 'cmp-face cache list'), or --all "
                               "to remove every one")
        removed = clear(args.names)
        for path in removed:
            print(f"removed {path} ({format_size(sizes.get(path, 0))})")
        if not removed:
            print(f"nothing to remove in {root}")
        return 0
    if args.names:
        raise CmpError("'cache list' takes no names")
    found = entries()
    if not found:
        print(f"no cached models in {root}")
        return 0
    width = max(len("NAME"), *(len(e.name) for e in found))
    print(f"{'NAME':<{width}}  {'KIND':<9}  {'STATE':<13}  {'SIZE':>9}  CREATED (UTC)")
    for e in found:
        print(f"{e.name:<{width}}  {e.kind:<9}  {e.state:<13}  {format_size(e.size):>9}  "
              f"{e.created:%Y-%m-%d %H:%M}")
        if e.state == "ok":
            print(f"{'':<{width}}  models: {e.path / 'models'}")
        for problem in e.problems:
            print(f"{'':<{width}}  {problem}")
    print(f"{len(found)} entr{'ies' if len(found) > 1 else 'y'} in {root}, "
          f"{format_size(sum(e.size for e in found))} in all")
    return 0


def _confirmed(question: str) -> bool:
    """Ask on a terminal; anywhere else (a script, a log) the answer is no."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def add_cache_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("action", choices=("list", "clear", "build"),
                   help="list the entries, clear (remove) some, or build one now")
    c.add_argument("names", nargs="*", metavar="NAME", help="entries to clear (as 'cache list' names them)")
    c.add_argument("--all", action="store_true",
                   help="clear: every entry (on a terminal, clear without names asks first)")
    c.add_argument("--release", type=Path, metavar="DIR", help="build: the release folder to export (default: the "
                                                                "synthetic pack)")
    c.add_argument("--epoch", help="build: checkpoint epoch when the release folder holds several")
    c.add_argument("--pipeline", choices=PIPELINES, default="supervised",
                   help="build: the pipeline of the release folder to export (default supervised)")


DOCTOR = Command("doctor", "check the installation: versions, GPU, cache, Sim3DR", lambda p: None, run_doctor,
                 description="Versions (from package metadata, so torch and TensorRT are never imported), ONNX "
                             "Runtime's providers, the GPU and driver, the Sim3DR build and the cache entries, with "
                             "a fix for each problem found. Exit status 2 when there is a problem.")
CACHE = Command(
    "cache", "list, clear or build the cached models folders", add_cache_arguments, run_cache,
    description="list: every cached models folder with its kind, state, size and path; clear NAME ... | --all: remove "
                "the named entries, or every one but builds in progress; build [--release DIR --pipeline P]: build an entry "
                "now (needs the export extra). The cache lives in $CMP_DEPLOY_CACHE, else $XDG_CACHE_HOME/cmp-deploy, "
                "else ~/.cache/cmp-deploy.")
COMMANDS = (DOCTOR, CACHE)
