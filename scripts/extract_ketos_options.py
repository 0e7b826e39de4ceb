#!/usr/bin/env python3
"""Record which options ketos accepts, per subcommand, and the values of its choice options, as
JSON (a test fixture: {"version", "ketos": [flags], "compile": [flags], ..., "choices":
{"train": {"--optimizer": [values], ...}, ...}}).

# from the installed kraken (introspects its click commands)
python scripts/extract_ketos_options.py --installed > tests/fixtures/ketos-options-7.1.1.json
# from a release's sources, no install needed (kraken 4.3 cannot be installed next to
# torch 2.13): a folder named after the version holding kraken/ketos/{__init__,dataset,
# recognition,segmentation}.py, e.g. from `pip download kraken==4.3.13 --no-deps` (unzip the
# wheel) or `git -C kraken show 4.3.13:kraken/ketos/recognition.py`
python scripts/extract_ketos_options.py --source 4.3.13 > tests/fixtures/ketos-options-4.3.13.json
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

SUBCOMMANDS = ("compile", "train", "segtrain", "test", "segtest")


def from_installed() -> dict:
    from importlib.metadata import version

    import click
    from kraken.ketos import cli

    def options(command):
        return sorted(
            {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        )

    def choices(command):
        return {
            o: list(p.type.choices)
            for p in command.params
            if isinstance(p.type, click.Choice)
            for o in sorted(p.opts)
        }

    commands = {"ketos": cli, **{name: cli.commands[name] for name in SUBCOMMANDS}}
    return {
        "version": version("kraken"),
        **{name: options(command) for name, command in commands.items()},
        "choices": {name: choices(command) for name, command in commands.items()},
    }


def _named(node, dotted: str) -> bool:
    """Whether an AST node is the name `module.attr`, e.g. click.option."""
    if not isinstance(node, ast.Attribute):
        return False
    return f"{getattr(node.value, 'id', '')}.{node.attr}" == dotted


def _source_commands(text: str) -> dict[str, tuple[list[str], dict]]:
    """name -> (flags, choices) of each click command (and the group, as 'ketos') in a module."""
    found = {}
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef):
            continue
        name, flags, choices = None, set(), {}
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            if _named(decorator.func, "click.group"):
                name = "ketos"
            elif _named(decorator.func, "click.command") and decorator.args:
                name = decorator.args[0].value
            elif _named(decorator.func, "click.option"):
                opts = [
                    o
                    for a in decorator.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                    for o in a.value.split("/")
                    if o.startswith("-")
                ]
                flags.update(opts)
                for keyword in decorator.keywords:
                    value = keyword.value
                    if (keyword.arg == "type" and isinstance(value, ast.Call)
                            and _named(value.func, "click.Choice")
                            and isinstance(value.args[0], (ast.List, ast.Tuple))):
                        listed = [e.value for e in value.args[0].elts]
                        choices.update({o: listed for o in sorted(opts)})
        if name:
            found[name] = (sorted(flags), choices)
    return found


def from_source(folder: Path) -> dict:
    """`folder` holds ketos' __init__.py, dataset.py, recognition.py and segmentation.py of one
    tag (choices must be literal lists there, as in 4.x)."""
    commands = {}
    for module in ("__init__.py", "dataset.py", "recognition.py", "segmentation.py"):
        commands.update(_source_commands((folder / module).read_text()))
    names = ["ketos", *(n for n in SUBCOMMANDS if n in commands)]
    return {
        "version": folder.name,
        **{name: commands[name][0] for name in names},
        "choices": {name: commands[name][1] for name in names},
    }


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
