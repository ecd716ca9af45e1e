"""``cmp-face``: predict a 3D face from a voice, compute release fbanks, export models.

Errors are reported in one line with a non-zero exit status; ``--debug`` shows the traceback.
Every option is checked before any work starts, and outputs are written all-or-nothing.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from runtime.errors import CmpError, InputError
from runtime.runners import BACKENDS

EXIT_ERROR = 2
MAX_THREADS = 256
MAX_BYTES_LIMIT = 1 << 40
# Commands whose module parses its own arguments, so that 'predict' never imports them (the
# exporter imports torch): name -> (module with main(argv, prog), the extra it needs, help).
PASS_THROUGH = {
    "export": ("export.to_onnx", "export", "export a release folder (or the synthetic pack) to ONNX; same "
                                           "arguments as export/to_onnx.py"),
    "build-engines": ("export.to_trt", "gpu", "build TensorRT engines from a models folder; same arguments "
                                              "as export/to_trt.py"),
    "calibrate": ("calibration.cli", "calibrate", "write FP16 and INT8 models of a models folder; same "
                                                  "arguments as python -m calibration"),
    "accuracy": ("calibration.report", "calibrate", "each precision against FP32 on held-out speech; same "
                                                    "arguments as python -m calibration.report"),
}
MAX_BYTES_HELP = "refuse input files larger than N bytes (default 200 MiB)"
# Our own output names in an OUT folder: a rerun replaces these and never touches other files.
OUTPUT_FILES = ("mesh.obj", "mesh_frontal.obj", "result.npz", "render.png", "face.png", "mesh.ply",
                "depth.png", "depth.npy")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like ours (argparse prints the usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def models_folder(args: argparse.Namespace) -> Path:
    """--models as given; else the cache's entry for --release or the synthetic pack (built,
    with torch, only when missing or damaged)."""
    if args.models:
        return args.models
    from runtime.cache import models_for

    return models_for(args.release, args.pipeline, args.epoch, _progress)


def _check_int(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise InputError(f"{name}: expected an integer from {low} to {high}, got {value}")


def _check_predict_options(args: argparse.Namespace) -> None:
    """Everything that can be checked before models are opened or inputs read."""
    from runtime.render import check_num_threads, check_size
    from runtime.runners import parse_device

    if args.size is not None:
        check_size(args.size, name="--size")
    check_num_threads()  # SIM3DR_NUM_THREADS, if set
    parse_device(args.device)
    _check_int("--threads", args.threads, 1, MAX_THREADS)
    _check_int("--max-bytes", args.max_bytes, 1, MAX_BYTES_LIMIT)
    sources = sum([bool(args.input), args.demo, args.mic is not None])
    if sources == 0:
        raise InputError("give an INPUT (audio file, .npy fbank or folder), --demo for the built-in "
                         "test voice, or --mic SECONDS")
    if sources > 1:
        raise InputError("give INPUT files, --demo or --mic, not several of them")
    if args.mic is not None:
        from runtime.microphone import check_seconds

        check_seconds(args.mic)
    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"{args.output}: exists and is not a folder")


# --------------------------------------------------------------------------- predict


def _write_outputs(result, out: Path, args: argparse.Namespace) -> tuple[list[Path], list[str], list[str]]:
    """Write one prediction's files into ``out``: all of them appear, or none changes."""
    from runtime.atomic import OutputFolder
    from runtime.mesh_io import write_obj, write_png

    with OutputFolder(out, OUTPUT_FILES) as folder:
        result.write_obj(folder.path("mesh.obj"))
        result.save_npz(folder.path("result.npz"))
        write_png(folder.path("render.png"), result.render(size=args.size))
        if result.vertices_frontal is not None:
            # The unaligned mesh: what the release's analysis and evaluation measure.
            write_obj(folder.path("mesh_frontal.obj"), result.vertices_frontal, result.triangles)
        if result.face_image is not None:
            write_png(folder.path("face.png"), result.face_image)
        if args.ply:
            result.write_ply(folder.path("mesh.ply"))
        if args.depth:
            result.write_depth(folder.path("depth.png"), args.size)
        return folder.commit()


def _replaced_note(out: Path, replaced: list[str], removed: list[str]) -> str | None:
    if not replaced and not removed:
        return None
    note = f"note: {out}: replaced the outputs of an earlier run ({', '.join(replaced)})"
    return note + (f"; removed {', '.join(removed)} (not written this time)" if removed else "")


def _predictor(args: argparse.Namespace):
    from runtime.predictor import Predictor

    from runtime.audio import DEFAULT_MAX_BYTES

    return Predictor(models_folder(args), args.pipeline, args.device, args.threads, vad=not args.no_vad,
                     frontend=args.frontend, max_bytes=args.max_bytes or DEFAULT_MAX_BYTES,
                     backend=args.backend, precision=args.precision)


def _untrained_warning(predictor) -> None:
    if predictor.untrained:
        _progress("WARNING: these models come from the synthetic asset pack: UNTRAINED weights, "
                  "the face carries no information about the voice. Pass --release DIR for the real models.")


def cmd_predict(args: argparse.Namespace) -> int:
    from runtime.inputs import plan_inputs

    _check_predict_options(args)
    jobs = plan_inputs(args.input, args.output) if args.input else None
    if jobs and (len(jobs) > 1 or jobs[0].batch):
        return _predict_many(args, jobs)
    predictor = _predictor(args)
    if args.demo:
        from runtime.demo_signal import demo_voice

        result = predictor.predict(demo_voice(), sample_rate=16000)
    elif args.mic is not None:
        from runtime.microphone import record

        result = predictor.predict(record(args.mic), sample_rate=16000)
    else:
        result = predictor.predict(jobs[0].source, sample_rate=args.sample_rate)
    written, replaced, removed = _write_outputs(result, args.output, args)
    _untrained_warning(predictor)
    stages = "  ".join(f"{k} {v:.1f} ms" for k, v in result.timings.items())
    print(f"{args.pipeline} pipeline ({predictor.models.describe()}): {stages}")
    note = _replaced_note(args.output, replaced, removed)
    if note:
        _progress(note)
    for path in written:
        print(f"wrote {path}")
    return 0


def _predict_many(args: argparse.Namespace, jobs) -> int:
    """One output folder per input, mirroring the input tree; failures are listed at the end."""
    from tqdm import tqdm

    predictor = _predictor(args)
    failed: list[tuple[Path, str]] = []
    rerun = 0
    for job in tqdm(jobs, desc="predict", unit="input", file=sys.stderr, disable=None):
        try:
            result = predictor.predict(job.source, sample_rate=args.sample_rate)
            _, replaced, removed = _write_outputs(result, job.output, args)
            rerun += bool(replaced or removed)
        except (CmpError, OSError) as exc:
            failed.append((job.source, str(exc).replace("\n", " ")))
            if args.debug:
                traceback.print_exc()
    _untrained_warning(predictor)
    done = len(jobs) - len(failed)
    if rerun:
        _progress(f"note: replaced the outputs of an earlier run in {rerun} of the output folders")
    print(f"wrote {done} of {len(jobs)} output folders under {args.output}")
    if failed:
        _progress(f"cmp-face: error: {len(failed)} of {len(jobs)} inputs failed:")
        for source, message in failed:
            _progress(f"  {source}: {message}")
        return EXIT_ERROR
    return 0


# --------------------------------------------------------------------------- other commands


def cmd_fbank(args: argparse.Namespace) -> int:
    import numpy as np

    from runtime.atomic import replacing
    from runtime.fbank import fbank_from_source

    from runtime.audio import DEFAULT_MAX_BYTES

    if args.output.suffix != ".npy" or args.output.is_dir():
        raise InputError(f"{args.output}: the output must be a .npy file name")
    _check_int("--max-bytes", args.max_bytes, 1, MAX_BYTES_LIMIT)
    fbank = fbank_from_source(args.input, sample_rate=args.sample_rate, vad=not args.no_vad,
                              max_bytes=args.max_bytes or DEFAULT_MAX_BYTES)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with replacing(args.output) as tmp:
        np.save(tmp, fbank)
    print(f"wrote {args.output}: {fbank.shape[0]} frames x {fbank.shape[1]} filters, float32")
    return 0


def cmd_pass_through(args: argparse.Namespace) -> int:
    """A command whose module parses its own arguments (imported only when it runs)."""
    module, extra, _ = PASS_THROUGH[args.command]
    try:
        main_of = importlib.import_module(module).main
    except ImportError as exc:
        raise CmpError(f"'cmp-face {args.command}' needs the {extra} extra ({exc.name} is missing): "
                       f"pip install 'cmp-deploy[{extra}]'") from exc
    return main_of(args.rest, prog=f"cmp-face {args.command}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from runtime.doctor import report

    lines, problems = report()
    print("\n".join(lines))
    return EXIT_ERROR if problems else 0


def cmd_cache(args: argparse.Namespace) -> int:
    """'cache list': a table of the cached models folders; 'cache clear [NAME ...]': remove them."""
    from runtime.cache import cache_root, clear, entries, format_size

    root = cache_root()
    if args.action == "clear":
        sizes = {e.path: e.size for e in entries()}
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
        for problem in e.problems:
            print(f"{'':<{width}}  {problem}")
    print(f"{len(found)} entr{'ies' if len(found) > 1 else 'y'} in {root}, "
          f"{format_size(sum(e.size for e in found))} in all")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from runtime import __version__
    from runtime.cli_tools import add_parsers
    from runtime.serve.cli import add_serve_parser, add_triton_repo_parser

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = _Parser(prog="cmp-face", description="Cross-Modal Perceptionist: voice -> 3D face mesh.",
                     parents=[common])
    parser.add_argument("--version", action="version", version=f"cmp-face {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("predict", parents=[common], help="predict a face mesh from a voice",
                       description="Write OUT/mesh.obj, OUT/result.npz, OUT/render.png (and OUT/face.png and "
                                   "OUT/mesh_frontal.obj for the unsupervised pipeline; OUT/mesh.ply and "
                                   "OUT/depth.png on request). Several inputs or a folder: one output folder "
                                   "per input, mirroring the input tree (DIR/<id>/<utt>.wav -> OUT/<id>/<utt>/). "
                                   "A rerun replaces our own files in OUT and never touches other files.")
    p.add_argument("input", nargs="*", type=Path, metavar="INPUT",
                   help="audio file (WAV, FLAC, ...), .npy fbank (T, 64), or a folder of them")
    p.add_argument("--demo", action="store_true", help="use the built-in synthetic voiced test signal")
    p.add_argument("--mic", type=float, metavar="SECONDS",
                   help="record SECONDS from the default microphone (needs the mic extra)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    p.add_argument("--pipeline", choices=("supervised", "unsupervised"), default="supervised")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--release", type=Path, metavar="DIR", help="release folder (exported once into the cache)")
    src.add_argument("--models", type=Path, metavar="DIR", help="models folder written by 'cmp-face export'")
    p.add_argument("--epoch", help="checkpoint epoch when the release folder holds several")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default), onnxruntime, onnxruntime-trt (its TensorRT provider) or tensorrt "
                        "(engines from 'cmp-face build-engines')")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="which models of the folder run (fp16/int8 files are made by export and calibrate)")
    p.add_argument("--threads", type=int, help=f"ONNX Runtime intra-op threads (1..{MAX_THREADS})")
    p.add_argument("--no-vad", action="store_true", help="keep silences (skip voice activity detection)")
    p.add_argument("--frontend", choices=("numpy", "onnx"), default="numpy",
                   help="log-mel in numpy (default), or audio through the fused voice2mesh ONNX graph")
    p.add_argument("--max-bytes", type=int, metavar="N", help=MAX_BYTES_HELP)
    p.add_argument("--sample-rate", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help="render size in pixels (default: the release's 120x120 "
                                            "overlap for unsupervised, 512 for supervised)")
    p.add_argument("--ply", action="store_true", help="also write OUT/mesh.ply (binary)")
    p.add_argument("--depth", action="store_true",
                   help="also write OUT/depth.png (16-bit, near is bright) and OUT/depth.npy (float32)")
    p.set_defaults(func=cmd_predict)

    f = sub.add_parser("fbank", parents=[common], help="write the release's normalised fbank of an audio file")
    f.add_argument("input", type=Path)
    f.add_argument("-o", "--output", type=Path, required=True, metavar="FEATS.npy")
    f.add_argument("--no-vad", action="store_true", help="keep silences (skip voice activity detection)")
    f.add_argument("--max-bytes", type=int, metavar="N", help=MAX_BYTES_HELP)
    f.add_argument("--sample-rate", type=int, help=argparse.SUPPRESS)
    f.set_defaults(func=cmd_fbank)

    d = sub.add_parser("doctor", parents=[common], help="check the installation: versions, GPU, cache, Sim3DR")
    d.set_defaults(func=cmd_doctor)

    add_parsers(sub, common)  # evaluate, analyze
    add_serve_parser(sub, common)
    add_triton_repo_parser(sub, common)

    c = sub.add_parser("cache", parents=[common], help="list or clear the cached models folders",
                       description="list: every cached models folder with its kind, state and size; "
                                   "clear [NAME ...]: remove the named entries (default: all but builds "
                                   "in progress). The cache lives in $CMP_DEPLOY_CACHE, else "
                                   "$XDG_CACHE_HOME/cmp-deploy, else ~/.cache/cmp-deploy.")
    c.add_argument("action", choices=("list", "clear"))
    c.add_argument("names", nargs="*", metavar="NAME", help="entries to clear (as 'cache list' names them)")
    c.set_defaults(func=cmd_cache)

    for name, (_, _, help_text) in PASS_THROUGH.items():
        sub.add_parser(name, add_help=False, help=help_text).set_defaults(func=cmd_pass_through, debug=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in PASS_THROUGH:
        args.rest = rest  # handed to the exporter's own parser
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except (CmpError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc).replace("\n", " ")
        print(f"cmp-face: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"cmp-face: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("cmp-face: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
