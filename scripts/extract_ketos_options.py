#!/usr/bin/env python3
"""Record which options ketos accepts, per subcommand, as JSON (a test fixture).

# from the installed kraken (introspects its click commands)
python scripts/extract_ketos_options.py --installed > tests/fixtures/ketos-options-7.1.1.json
# from a kraken source checkout at a tag (no install needed; kraken 4.3 cannot be installed
# next to torch 2.13)
git -C kraken show 4.3.13:kraken/ketos/__init__.py > /tmp/i.py ...   (see --source)
python scripts/extract_ketos_options.py --source DIR > tests/fixtures/ketos-options-4.3.13.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SUBCOMMANDS = ("compile", "train", "segtrain", "test")


def from_installed() -> dict:
    from importlib.metadata import version

    from kraken.ketos import cli

    def options(command):
        return sorted(
            {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        )

    return {
        "version": version("kraken"),
        "ketos": options(cli),
        **{name: options(cli.commands[name]) for name in SUBCOMMANDS},
    }


def _source_options(text: str) -> list[str]:
    found = set()
    for call in re.findall(r"@click\.option\(([^)]*)", text):
        for opt in re.findall(r"'(-[^']+)'", call):
            found.update(opt.split("/"))
    return sorted(o for o in found if o.startswith("-"))


def from_source(folder: Path) -> dict:
    """`folder` holds ketos' __init__.py, dataset.py, recognition.py and segmentation.py of one
    tag."""

    def commands(text):
        parts = re.split(r"(?=@click\.command\('([a-z]+)'\))", text)
        out, name = {}, None
        for part in parts:
            if re.fullmatch(r"[a-z]+", part or ""):
                name = part
            elif name:
                out[name] = part.split("\ndef ", 1)[0] + "\ndef"
                name = None
        return out

    result = {
        "version": folder.name,
        "ketos": _source_options((folder / "__init__.py").read_text()),
    }
    for module in ("dataset.py", "recognition.py", "segmentation.py"):
        for name, text in commands((folder / module).read_text()).items():
            if name in SUBCOMMANDS:
                result[name] = _source_options(text)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--installed", action="store_true")
    group.add_argument("--source", type=Path)
    args = parser.parse_args()
    data = from_installed() if args.installed else from_source(args.source)
    json.dump(data, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
