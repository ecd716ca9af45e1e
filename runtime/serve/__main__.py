"""``python -m runtime.serve ...``: the same as ``cmp-face serve ...``."""
from __future__ import annotations

import sys

from runtime.cli.serving import SERVE
from runtime.cli.shell import run_program

if __name__ == "__main__":
    sys.exit(run_program(SERVE, None, "python -m runtime.serve"))
