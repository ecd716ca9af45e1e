"""``cmp-face``, the command line: a thin shell on top of the library (``shell``: the parser and
the one error loop; ``args``: the argument groups every command shares; one module per family of
commands). ``export``, ``calibrate`` and friends come from the packages that register them."""
from runtime.cli.shell import main

__all__ = ["main"]
