"""``cmp-face calibrate`` (= ``python -m calibration``) and ``cmp-face accuracy``
(= ``python -m calibration.report``): their arguments and what runs them.

Registered as ``cmp-face`` commands through entry points (``setup.py``); this module imports no
onnx at import time, so listing the commands costs nothing. Errors go through the command line's
one error loop (``runtime.cli.shell.run``): one line, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli.shell import program
from runtime.models_folder import MANIFEST
from runtime.plugins import Command

AUTO = "auto"  # calibration.int8.DEFAULT_METHOD, without importing onnxruntime here
METHODS = ("max", "percentile", "entropy")  # calibration.stats.METHODS (a test holds them equal)
PRECISIONS = ("int8", "fp16")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, required=True, metavar="DIR", help="models folder (FP32 files)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--audio", type=Path, metavar="DIR", help="folder of speech recordings (VAD on)")
    source.add_argument("--fbanks", type=Path, metavar="DIR", help="folder of (T, 64) .npy fbanks")
    parser.add_argument("--max-inputs", type=int, metavar="N",
                        help="use at most N utterances, chosen deterministically across lengths (default: all)")
    parser.add_argument("--precision", choices=PRECISIONS, default="int8", help="what to write (default %(default)s)")
    parser.add_argument("--method", choices=(AUTO, *METHODS), default=AUTO,
                        help="int8: how activation ranges are chosen from the statistics; auto (default) tries "
                             "each on the cached statistics and keeps, per graph, the one that leaves the most "
                             "weights INT8 within the bar (the most accurate among equals)")
    parser.add_argument("--flavour", choices=("tensorrt", "cpu"), default="tensorrt",
                        help="int8: symmetric s8 activations for TensorRT (<graph>_int8.onnx, default) or "
                             "u8 activations for ONNX Runtime's CPU (<graph>_int8u8.onnx)")
    parser.add_argument("--data-max", type=float, default=None, metavar="X",
                        help="fp16: activations beyond this stay FP32 (default 2048)")


def run_calibrate(args: argparse.Namespace) -> int:
    from calibration import inputs

    data = inputs.select(inputs.load(args.audio, args.fbanks, progress=print), args.max_inputs)
    if args.precision == "int8":
        from calibration.int8 import write_int8

        write_int8(args.models, data, args.method, flavour=args.flavour)
        return 0
    from calibration.fp16 import DATA_MAX, write_fp16

    write_fp16(args.models, data, args.data_max or DATA_MAX)
    return 0


def add_accuracy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, required=True, metavar="DIR",
                        help=f"models folder whose {MANIFEST} records FP16 or INT8 models")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", type=Path, metavar="DIR", help="held-out speech recordings")
    source.add_argument("--fbanks", type=Path, metavar="DIR", help="held-out (T, 64) .npy fbanks")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR", help="default: MODELS/accuracy")
    parser.add_argument("--report-only", action="store_true",
                        help="exit 0 even when a served model misses its bar (the report says FAIL)")


def run_accuracy(args: argparse.Namespace) -> int:
    from calibration import inputs
    from calibration.report import evaluate, write
    from runtime.atomic import check_writable

    check_writable(args.output or args.models / "accuracy")
    report = evaluate(args.models, inputs.load(args.audio, args.fbanks, progress=print))
    files = write(report, args.output or args.models / "accuracy")
    print("wrote " + ", ".join(str(f) for f in files))
    if not report["failures"]:
        print("PASS: every model served meets its bar")
        return 0
    for line in report["failures"]:
        print(f"FAIL: {line}", file=sys.stderr)
    if report["untrained"]:
        print("(the synthetic pack's weights are untrained: their decoders amplify tiny embedding changes)",
              file=sys.stderr)
    return 0 if args.report_only else 1


CALIBRATE = Command(
    "calibrate", "write FP16 and INT8 models of a models folder", add_calibrate_arguments, run_calibrate,
    extra="calibrate", prog="python -m calibration",
    description="Writes reduced-precision models beside the FP32 ones and records them in the folder's manifest. "
                "Without --audio/--fbanks the built-in synthetic voices are used (labelled as such).")
ACCURACY = Command(
    "accuracy", "each precision against FP32 on held-out speech", add_accuracy_arguments, run_accuracy,
    extra="calibrate", prog="python -m calibration.report",
    description="Each FP16/INT8 model of a models folder against FP32 on held-out inputs: embedding cosine, "
                "decoder parameter error, vertex errors and the change of the paper's ARE ratios.")


main = program(CALIBRATE, "python -m calibration")


if __name__ == "__main__":
    sys.exit(main())
