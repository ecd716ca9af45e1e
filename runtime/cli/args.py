"""Argument groups shared by the ``cmp-face`` commands: each flag has one meaning and one set of
values in every command that takes it.

* models: ``--models DIR`` / ``--release DIR`` (exclusive), ``--epoch``, ``--pipeline``;
* execution: ``--device``, ``--backend``, ``--precision``, ``--threads``, ``--frontend``.

Choices are checked by argparse (a one-line usage error); ranges and devices by
:func:`check_execution` before any work starts (one-line ``cmp-face: error:``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from runtime.errors import InputError
from runtime.models_folder import MANIFEST, PIPELINES, PRECISIONS
from runtime.prepare import DEPRECATED_FRONTENDS, FRONTENDS
from runtime.runners.select import BACKENDS, DEVICE_VALUES, parse_device

EXIT_ERROR = 2
MAX_THREADS = 256
MAX_WORKERS = 256
MAX_BYTES_LIMIT = 1 << 40
MAX_BYTES_HELP = "refuse input files larger than N bytes (default 200 MiB)"
BOTH = "both"


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like ours (argparse prints the usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def untrained_warning(args: argparse.Namespace) -> str:
    """The one line said whenever the synthetic (untrained) models answered."""
    fix = ("the models folder was exported from the synthetic pack; export the release's with "
           "'cmp-face export --release DIR'" if getattr(args, "models", None) else
           "pass --release DIR for the real models")
    return (f"WARNING: these models come from the synthetic asset pack: UNTRAINED weights, the face carries no "
            f"information about the voice; {fix}.")


def check_int(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise InputError(f"{name}: expected an integer from {low} to {high}, got {value}")


def check_execution(args: argparse.Namespace) -> None:
    """The execution arguments a command has, checked before any work (one-line errors)."""
    if getattr(args, "device", None) is not None:
        parse_device(args.device)
    if getattr(args, "threads", None) is not None:
        check_int("--threads", args.threads, 1, MAX_THREADS)
    if getattr(args, "workers", None) is not None:
        check_int("--workers", args.workers, 1, MAX_WORKERS)
    if getattr(args, "max_bytes", None) is not None:
        check_int("--max-bytes", args.max_bytes, 1, MAX_BYTES_LIMIT)


def add_models(parser: argparse.ArgumentParser, *, release: bool = True, pipelines: str = "one",
               required: bool = False, models_help: str | None = None) -> None:
    """``--models DIR`` (and, with ``release``, ``--release DIR`` exclusive with it, and ``--epoch``);
    ``--pipeline``: ``pipelines`` "one" (supervised | unsupervised, default supervised), "many"
    (those or ``both``, default both: every pipeline of the folder) or "none"."""
    models_help = models_help or f"models folder written by 'cmp-face export' ({MANIFEST}, *.onnx)"
    if release:
        src = parser.add_mutually_exclusive_group(required=required)
        src.add_argument("--release", type=Path, metavar="DIR", help="release folder (exported once into the cache)")
        src.add_argument("--models", type=Path, metavar="DIR", help=models_help)
        parser.add_argument("--epoch", help="checkpoint epoch when the release folder holds several")
    else:
        parser.add_argument("--models", type=Path, metavar="DIR", required=required, help=models_help)
    if pipelines == "one":
        parser.add_argument("--pipeline", choices=PIPELINES, default="supervised",
                            help="supervised (default) or unsupervised")
    elif pipelines == "many":
        parser.add_argument("--pipeline", choices=(*PIPELINES, BOTH), default=BOTH,
                            help="supervised, unsupervised or both (default: every pipeline of the folder)")


def add_execution(parser: argparse.ArgumentParser, *, device: str = "auto", backend: bool = True,
                  precision: bool = True, threads: bool = True, frontend: bool = True) -> None:
    """``--device``, ``--backend``, ``--precision``, ``--threads``, ``--frontend`` (each only when asked)."""
    parser.add_argument("--device", default=device, help=f"{DEVICE_VALUES} (default {device})")
    if backend:
        parser.add_argument("--backend", choices=BACKENDS, default="auto",
                            help="auto (default), onnxruntime, onnxruntime-trt (its TensorRT provider) or tensorrt "
                                 "(engines from 'cmp-face build-engines')")
    if precision:
        add_precision(parser, default="fp32", help="which models of the folder run (fp16/int8 files are made by "
                                                   "export and calibrate; default fp32)")
    if threads:
        parser.add_argument("--threads", type=int, metavar="N", help=f"ONNX Runtime intra-op threads (1..{MAX_THREADS})")
    if frontend:
        parser.add_argument("--frontend", choices=(*FRONTENDS, *DEPRECATED_FRONTENDS), default="numpy",
                            help="numpy (default): the log-mel in numpy, then encoder and decoder; fused: audio "
                                 "through the fused voice-to-mesh ONNX graph (the earlier spelling 'onnx' still "
                                 "works, deprecated)")


def add_workers(parser: argparse.ArgumentParser, help: str, *aliases: str) -> None:
    """``--workers N``: processes for the CPU work (default: one per core)."""
    from runtime.predict_files import default_workers

    parser.add_argument("--workers", *aliases, type=int, default=default_workers(), metavar="N",
                        help=f"{help} (1..{MAX_WORKERS})")


def add_precision(parser: argparse.ArgumentParser, default: str, help: str,
                  choices: tuple[str, ...] = PRECISIONS) -> None:
    parser.add_argument("--precision", choices=choices, default=default, help=help)


def add_max_bytes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-bytes", type=int, metavar="N", help=MAX_BYTES_HELP)


def pipelines_of(value: str) -> tuple[str, ...] | None:
    """``--pipeline`` of a "many" command: the pipelines named, or None for every one of the folder."""
    return None if value == BOTH else (value,)
