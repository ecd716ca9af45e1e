"""What several test modules share (data paths, stand-ins, writers): tests import from here, not
from each other or from conftest."""
