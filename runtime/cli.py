"""``cmp-face``: predict a 3D face from a voice, compute release fbanks, export models.

Errors are reported in one line with a non-zero exit status; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from runtime.errors import CmpError

EXIT_ERROR = 2


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _models_folder(args: argparse.Namespace) -> Path:
    """--models as given; else export --release, or the synthetic pack, into the cache (torch)."""
    if args.models:
        return args.models
    try:
        from export.cache import release_models, synthetic_models
    except ImportError as exc:
        raise CmpError(f"building models needs the export extra ({exc.name} is missing): "
                       "pip install 'cmp-deploy[export]', or pass --models DIR") from exc
    if args.release:
        return release_models(args.release, args.pipeline, args.epoch, _progress)
    return synthetic_models(progress=_progress)


def cmd_predict(args: argparse.Namespace) -> int:
    from runtime.demo_signal import demo_voice
    from runtime.mesh_io import write_png
    from runtime.predictor import Predictor

    if args.input is None and not args.demo:
        raise CmpError("give an INPUT (audio file, or .npy fbank) or --demo for the built-in test voice")
    predictor = Predictor(_models_folder(args), args.pipeline, args.device, args.threads, vad=not args.no_vad,
                          frontend=args.frontend)
    if args.demo:
        result = predictor.predict(demo_voice(), sample_rate=16000)
    else:
        result = predictor.predict(args.input, sample_rate=args.sample_rate)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    written = [result.write_obj(out / "mesh.obj"), result.save_npz(out / "result.npz")]
    image = result.render(size=args.size)
    written.append(write_png(out / "render.png", image))
    if result.face_image is not None:
        written.append(write_png(out / "face.png", result.face_image))
    if args.ply:
        written.append(result.write_ply(out / "mesh.ply"))
    if args.depth:
        written.extend(result.write_depth(out / "depth.png", args.size))
    if predictor.untrained:
        _progress("WARNING: these models come from the synthetic asset pack: UNTRAINED weights, "
                  "the face does not depend on the voice. Pass --release DIR for the real models.")
    stages = "  ".join(f"{k} {v:.1f} ms" for k, v in result.timings.items())
    print(f"{args.pipeline} pipeline ({', '.join(predictor.models.providers)}): {stages}")
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_fbank(args: argparse.Namespace) -> int:
    import numpy as np

    from runtime.fbank import fbank_from_source

    fbank = fbank_from_source(args.input, sample_rate=args.sample_rate, vad=not args.no_vad)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, fbank)
    print(f"wrote {args.output}: {fbank.shape[0]} frames x {fbank.shape[1]} filters, float32")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from export import to_onnx
    except ImportError as exc:
        raise CmpError(f"exporting needs the export extra ({exc.name} is missing): "
                       "pip install 'cmp-deploy[export]'") from exc
    return to_onnx.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = argparse.ArgumentParser(prog="cmp-face", description="Cross-Modal Perceptionist: voice -> 3D face mesh.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", parents=[common], help="predict a face mesh from a voice",
                       description="Write OUT/mesh.obj, OUT/result.npz, OUT/render.png (and OUT/face.png "
                                   "for the unsupervised pipeline; OUT/mesh.ply and OUT/depth.png on request).")
    p.add_argument("input", nargs="?", type=Path, help="audio file (WAV, FLAC, ...) or .npy fbank (T, 64)")
    p.add_argument("--demo", action="store_true", help="use the built-in synthetic voiced test signal")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    p.add_argument("--pipeline", choices=("supervised", "unsupervised"), default="supervised")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--release", type=Path, metavar="DIR", help="release folder (exported once into the cache)")
    src.add_argument("--models", type=Path, metavar="DIR", help="models folder written by 'cmp-face export'")
    p.add_argument("--epoch", help="checkpoint epoch when the release folder holds several")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--no-vad", action="store_true", help="keep silences (skip voice activity detection)")
    p.add_argument("--frontend", choices=("numpy", "onnx"), default="numpy",
                   help="log-mel in numpy (default), or audio through the fused voice2mesh ONNX graph")
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
    f.add_argument("--sample-rate", type=int, help=argparse.SUPPRESS)
    f.set_defaults(func=cmd_fbank)

    from runtime.cli_tools import add_parsers
    add_parsers(sub, common)  # evaluate, analyze

    # The exporter (torch) parses its own arguments, so 'cmp-face predict' never loads torch.
    e = sub.add_parser("export", add_help=False, help="export a release folder (or the synthetic pack) to "
                                                      "ONNX; same arguments as export/to_onnx.py")
    e.set_defaults(func=cmd_export, debug=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "export":
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
