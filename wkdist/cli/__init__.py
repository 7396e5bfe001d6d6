"""The ``wkdist`` command line: one thin module per subcommand over ``wkdist.app``."""

from .main import main

__all__ = ["main"]
