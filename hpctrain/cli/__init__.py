"""The command line: `hpctrain = hpctrain.cli:main`. Importing it registers every command and
imports nothing heavy (each command imports its `hpctrain.app` module when it runs)."""

from __future__ import annotations

# noqa: F401 below: importing them registers their commands
from . import compare, files, follow, report, results, submit, workspace  # noqa: F401
from .main import main

__all__ = ["main"]
