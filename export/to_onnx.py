"""Export the release's networks to ONNX and verify them against PyTorch.

    cmp-face export --release RELEASE_DIR -o models/
    cmp-face export --synthetic -o models/        # untrained synthetic asset pack

(``python export/to_onnx.py ...`` takes the same arguments.)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.checkpoints import PIPELINES  # noqa: E402
from export.onnx_export import (DEFAULT_TOLERANCE, default_real_audio, default_real_inputs,  # noqa: E402
                                export_release, export_steps)
from export.progress import StepBar  # noqa: E402
from export.synthetic import PACK_STEPS, write_pack  # noqa: E402


def build_parser(parser: argparse.ArgumentParser | None = None, prog: str = "cmp-face export") -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--release", type=Path, metavar="DIR",
                        help="folder laid out like the release (pretrained_models/, train.configs/)")
    source.add_argument("--synthetic", action="store_true",
                        help="write and export the deterministic UNTRAINED synthetic asset pack")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="MODELS", help="models folder to write")
    parser.add_argument("--pipeline", choices=(*PIPELINES, "both"), default="both")
    parser.add_argument("--epoch", help="checkpoint epoch when the folder holds several")
    parser.add_argument("--real-inputs", type=Path, metavar="DIR", default=default_real_inputs(),
                        help="folder of (T, 64) .npy fbanks to verify on (default: ../shared/data/"
                             "fbank_preprocessed in a development checkout, if present)")
    parser.add_argument("--real-audio", type=Path, metavar="DIR", default=default_real_audio(),
                        help="folder of .wav speech to verify the frontend graphs on (default: ../shared/"
                             "data/voxceleb_wav in a development checkout, if present)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest relative error accepted against PyTorch (default %(default)g)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic pack")
    parser.add_argument("--pack-dir", type=Path, metavar="DIR",
                        help="with --synthetic: keep the written release-layout pack here")
    parser.add_argument("--precision", type=_precisions, default=("fp32",), metavar="fp32[,fp16]",
                        help="also write <graph>_fp16.onnx (FP32 islands from value ranges measured on "
                             "--fp16-audio, else the built-in voices; needs no calibration data). INT8: "
                             "cmp-face calibrate")
    parser.add_argument("--fp16-audio", type=Path, metavar="DIR",
                        help="speech recordings whose value ranges choose the FP16 islands")
    return parser


def _precisions(text: str) -> tuple[str, ...]:
    wanted = tuple(p.strip() for p in text.split(",") if p.strip())
    if "fp32" not in wanted or not set(wanted) <= {"fp32", "fp16"}:
        raise argparse.ArgumentTypeError(f"expected fp32 or fp32,fp16, got {text!r} (INT8: cmp-face calibrate)")
    return wanted


def run(args: argparse.Namespace) -> dict:
    manifest = _export(args)
    if "fp16" in args.precision:  # from the finished FP32 files, like 'cmp-face calibrate --precision fp16'
        from calibration import fp16, inputs

        manifest["precisions"] = {"fp16": fp16.write_fp16(args.output, inputs.load(audio=args.fp16_audio))}
    return manifest


def _export(args: argparse.Namespace) -> dict:
    pipelines = PIPELINES if args.pipeline == "both" else (args.pipeline,)
    steps = export_steps(pipelines) + (PACK_STEPS if args.synthetic else 0)
    with StepBar(steps, print, desc="exporting") as progress:
        if not args.synthetic:
            return export_release(args.release, args.output, pipelines, args.epoch, args.real_inputs,
                                  args.tolerance, progress=progress, real_audio=args.real_audio)
        with tempfile.TemporaryDirectory(prefix="cmp-synthetic-") as tmp:
            pack = write_pack(args.pack_dir or Path(tmp) / "release", seed=args.seed, progress=progress)
            return export_release(pack, args.output, pipelines, None, args.real_inputs, args.tolerance, args.seed,
                                  progress=progress, real_audio=args.real_audio)


def main(argv: list[str] | None = None, prog: str = "cmp-face export") -> int:
    """``python export/to_onnx.py`` and ``cmp-face export``."""
    run(build_parser(prog=prog).parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
