"""`python -m hpctrain.logparse LOG`: kept at this documented place; the parser lives in
runtime.logparse."""

from __future__ import annotations

from .runtime.logparse import LogParser, main, parse_file, parse_lines

__all__ = ["LogParser", "main", "parse_file", "parse_lines"]

if __name__ == "__main__":
    raise SystemExit(main())
