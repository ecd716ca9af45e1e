"""Export the release's networks to ONNX and verify them against PyTorch.

    cmp-face export --release RELEASE_DIR -o models/
    cmp-face export --synthetic -o models/        # untrained synthetic asset pack

(``python export/to_onnx.py ...`` takes the same arguments.) Importing this module imports no
torch (it defines the ``cmp-face export`` command); running it does.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.cli.args import BOTH, pipelines_of  # noqa: E402
from runtime.cli.shell import program  # noqa: E402
from runtime.models_folder import PIPELINES  # noqa: E402
from runtime.plugins import Command  # noqa: E402

DEFAULT_TOLERANCE = 1e-4  # export.onnx_export.DEFAULT_TOLERANCE (a test holds them equal)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--release", type=Path, metavar="DIR",
                        help="folder laid out like the release (pretrained_models/, train.configs/)")
    source.add_argument("--synthetic", action="store_true",
                        help="write and export the deterministic UNTRAINED synthetic asset pack")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="MODELS", help="models folder to write")
    parser.add_argument("--pipeline", choices=(*PIPELINES, BOTH), default=BOTH,
                        help="supervised, unsupervised or both (default)")
    parser.add_argument("--epoch", help="checkpoint epoch when the folder holds several")
    parser.add_argument("--real-inputs", type=Path, metavar="DIR",
                        help="folder of (T, 64) .npy fbanks to verify on besides random inputs (default: "
                             "$CMP_DEPLOY_VERIFY_FBANKS, if set)")
    parser.add_argument("--real-audio", type=Path, metavar="DIR",
                        help="folder of .wav speech to verify the frontend graphs on (default: "
                             "$CMP_DEPLOY_VERIFY_AUDIO, if set; else the built-in synthetic voice)")
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
    from runtime.atomic import check_writable

    check_writable(args.output)  # before minutes of export
    from export.onnx_export import default_real_audio, default_real_inputs, export_release, export_steps
    from export.progress import StepBar
    from export.synthetic import PACK_STEPS, write_pack

    pipelines = pipelines_of(args.pipeline) or PIPELINES
    real_inputs = args.real_inputs or default_real_inputs()
    real_audio = args.real_audio or default_real_audio()
    steps = export_steps(pipelines) + (PACK_STEPS if args.synthetic else 0)
    with StepBar(steps, print, desc="exporting") as progress:
        if not args.synthetic:
            return export_release(args.release, args.output, pipelines, args.epoch, real_inputs,
                                  args.tolerance, progress=progress, real_audio=real_audio)
        with tempfile.TemporaryDirectory(prefix="cmp-synthetic-") as tmp:
            pack = write_pack(args.pack_dir or Path(tmp) / "release", seed=args.seed, progress=progress)
            return export_release(pack, args.output, pipelines, None, real_inputs, args.tolerance, args.seed,
                                  progress=progress, real_audio=real_audio)


COMMAND = Command("export", "export a release folder (or the synthetic pack) to ONNX", add_arguments, run,
                  extra="export", description="Export the release's networks (or the UNTRAINED synthetic pack's) to "
                                              "ONNX, verify every file against PyTorch with ONNX Runtime, and write "
                                              "the models folder.")

if __name__ == "__main__":
    sys.exit(program(COMMAND, "to_onnx.py")())
