"""``python -m calibration --models DIR (--audio DIR | --fbanks DIR) [--method M] [--precision P]``

Writes reduced-precision models beside the FP32 ones and records them in ``models.json``.
Without ``--audio``/``--fbanks`` the built-in synthetic voices are used (labelled as such).
Errors print one line ``calibrate: error: ...`` and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calibration.stats import METHODS
from runtime.errors import CmpError

AUTO = "auto"  # calibration.int8.DEFAULT_METHOD, without importing onnxruntime here

PRECISIONS = ("int8", "fp16")


def build_parser(parser: argparse.ArgumentParser | None = None,
                 prog: str = "python -m calibration") -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
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
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def run(args: argparse.Namespace) -> dict:
    from calibration import inputs

    data = inputs.select(inputs.load(args.audio, args.fbanks, progress=print), args.max_inputs)
    if args.precision == "int8":
        from calibration.int8 import write_int8

        return write_int8(args.models, data, args.method, flavour=args.flavour)
    from calibration.fp16 import DATA_MAX, write_fp16

    return write_fp16(args.models, data, args.data_max or DATA_MAX)


def main(argv: list[str] | None = None, prog: str = "python -m calibration") -> int:
    """``python -m calibration`` and ``cmp-face calibrate`` (``prog`` names which in messages)."""
    args = build_parser(prog=prog).parse_args(argv)
    try:
        run(args)
    except CmpError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
