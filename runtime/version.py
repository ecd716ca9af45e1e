"""The version of cmp-deploy (one place; runtime/__init__.py and the command line read it)."""
__version__ = "0.1.0"
