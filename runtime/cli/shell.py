"""``cmp-face``: the command line, a thin shell over the library.

Its own commands live beside this module (``predict``, ``fbank``, ``evaluate``, ``analyze``,
``serve``, ``triton-repo``, ``cache``, ``doctor``); ``export``, ``build-engines``, ``calibrate`` and
``accuracy`` are registered by the export and calibration packages as entry points
(:mod:`runtime.plugins`), so the runtime never imports them. Every command runs through one error
loop (:func:`run`): our errors are one line on stderr with exit status 2 (``--debug`` shows the
traceback), Ctrl-C ends as ``interrupted`` with 130, and options are checked before any work.
"""
from __future__ import annotations

import argparse
import re
import sys
import traceback
import warnings
from typing import Callable

import runtime.cli.admin as admin
import runtime.cli.predict as predict
import runtime.cli.serving as serving
import runtime.cli.tools as tools
from runtime.cli.args import EXIT_ERROR, Parser
from runtime.errors import CmpError
from runtime.plugins import Command, registered_commands
from runtime.version import __version__

PROG = "cmp-face"
EXIT_INTERRUPTED = 130
BUILTIN = (*predict.COMMANDS, *tools.COMMANDS, *serving.COMMANDS, *admin.COMMANDS)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    return common


def add_command(sub, command: Command, common: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(command.name, parents=[common], help=command.help,
                            description=command.description or command.help, prog=prog)
    command.add_arguments(parser)
    parser.set_defaults(command=command)
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = Parser(prog=PROG, description="Cross-Modal Perceptionist: voice -> 3D face mesh.", parents=[common])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command_name", required=True, parser_class=Parser)
    for command in (*BUILTIN, *registered_commands()):
        add_command(sub, command, common, f"{PROG} {command.name}")
    return parser


def _extra_message(command: Command, prog: str, exc: ImportError) -> str:
    # name the command the user typed: 'cmp-face export', not the bare program
    what = f"{PROG} {command.name}" if prog == PROG else prog
    return (f"'{what}' needs the {command.extra} extra ({exc.name} is missing): "
            f"pip install 'cmp-deploy[{command.extra}]'")


def _one_line_warnings(prog: str):
    """Our warnings (a truncated WAV, short speech, a deprecated spelling) as ``<prog>: warning:``
    lines, each once, instead of Python's file-and-line format."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).replace("\n", " ")
        if text not in shown:
            shown.add(text)
            print(f"{prog}: warning: {text}", file=sys.stderr, flush=True)

    return show


def run(command: Command, args: argparse.Namespace, prog: str) -> int:
    """The one error loop: run ``command`` and turn every failure into a one-line message."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(prog)
        warnings.filterwarnings("default", category=DeprecationWarning, module=r"runtime(\.|$)")
        return _run(command, args, prog)


def _run(command: Command, args: argparse.Namespace, prog: str) -> int:
    debug = getattr(args, "debug", False)
    try:
        status = command.run(args)
        return status if isinstance(status, int) else 0  # a command may return its result instead
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CmpError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as exc:
        if debug:
            raise
        if command.extra and exc.name:
            print(f"{prog}: error: {_extra_message(command, prog, exc)}", file=sys.stderr)
        else:
            print(f"{prog}: internal error: ImportError: {exc} (rerun with --debug for the traceback)",
                  file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(str(exc))} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return EXIT_ERROR


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour codes some libraries put in their messages


def _one_line(message: str) -> str:
    return _ANSI.sub("", message).replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    """``cmp-face``."""
    args = build_parser().parse_args(argv)
    command: Command = args.command
    # Errors are printed under the command's own name when it is also a program of its own
    # ('cmp-face calibrate' = 'python -m calibration'); the built-in commands print 'cmp-face'.
    return run(command, args, f"{PROG} {command.name}" if command.prog else PROG)


def command_parser(command: Command, prog: str) -> argparse.ArgumentParser:
    """The argument parser of ``command`` as a program of its own."""
    parser = Parser(prog=prog, description=command.description or command.help, parents=[_common()])
    command.add_arguments(parser)
    return parser


def run_program(command: Command, argv: list[str] | None, prog: str) -> int:
    """A command as a program of its own (``python -m calibration``, ``python export/to_trt.py``)."""
    return run(command, command_parser(command, prog).parse_args(argv), prog)


def program(command: Command, prog: str) -> Callable[[list[str] | None], int]:
    """The ``main(argv=None)`` of a command that is also a program of its own."""
    def main(argv: list[str] | None = None) -> int:
        return run_program(command, argv, prog)
    main.__doc__ = f"``{prog}`` (= ``cmp-face {command.name}``)."
    return main
