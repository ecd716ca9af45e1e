"""``python -m runtime.cli``: the same as ``cmp-face``."""
import sys

from runtime.cli.shell import main

sys.exit(main())
