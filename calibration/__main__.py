"""``python -m calibration``: see calibration.cli."""
import sys

from calibration.cli import main

sys.exit(main())
