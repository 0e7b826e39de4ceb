"""The command line: `hpctrain = hpctrain.cli:main`. Importing it registers every command and
imports nothing heavy (each command imports its `hpctrain.app` module when it runs)."""

from __future__ import annotations

from . import files, follow, results, submit, workspace  # noqa: F401  (they register commands)
from .main import main

__all__ = ["main"]
