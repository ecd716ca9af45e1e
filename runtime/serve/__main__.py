"""``python -m runtime.serve ...``: the same as ``cmp-face serve ...``."""
from __future__ import annotations

import argparse
import sys

from runtime.errors import CmpError
from runtime.serve.cli import add_serve_parser


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = argparse.ArgumentParser(prog="python -m runtime.serve")
    sub = parser.add_subparsers(dest="command")
    add_serve_parser(sub, common)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (CmpError, OSError) as exc:
        if args.debug:
            raise
        print(f"cmp-face: error: {str(exc).replace(chr(10), ' ')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
