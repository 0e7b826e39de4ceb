"""`python -m hpctrain.cli.entry ...`: the CLI as a module (what the `hpctrain` script runs)."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    main(prog_name="hpctrain")
