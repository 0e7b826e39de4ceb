"""Rendering job scripts from Jinja templates that users can override.

Search order: the overrides the laptop sends with the request (collected from `--template-dir`,
the workspace's `templates/` and the user config dir's `templates/`, in that order), then the
templates folders given on this side (the cluster user's own config dir), then the packaged
ones. An override of the same name can `{% extends "packaged/kraken/transcription.sh.j2" %}` and
replace one block. Values reach the shell only through the `q`, `shjoin` and `sbatch` filters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from ..core.errors import TemplateError
from .shell import sbatch_value, shell_join, shell_quote

TEMPLATE_SUFFIX = ".j2"
MAX_OVERRIDE_BYTES = 1 << 20


def packaged_template_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "templates"


def collect_overrides(folders: Iterable[Path | None]) -> dict[str, str]:
    """Every template under `folders` by its relative name; an earlier folder wins a name."""
    found: dict[str, str] = {}
    for folder in [f for f in folders if f is not None and f.is_dir()][::-1]:
        for path in sorted(folder.rglob(f"*{TEMPLATE_SUFFIX}")):
            if path.is_file():
                found[path.relative_to(folder).as_posix()] = _read_template(path)
    if sum(len(text) for text in found.values()) > MAX_OVERRIDE_BYTES:
        raise TemplateError(
            "your template overrides are over 1 MiB together: "
            "keep only the templates you changed in templates/"
        )
    return found


def _read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"cannot read template {path}: {e}") from e


def environment(overrides: Mapping[str, str] | None = None, folders: Iterable[Path] = ()):
    import jinja2

    packaged = jinja2.FileSystemLoader(str(packaged_template_dir()))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.DictLoader(dict(overrides or {})),
                jinja2.FileSystemLoader([str(p) for p in folders if p.is_dir()]),
                packaged,
                # The packaged templates stay reachable under this prefix, so that an override can
                # extend the template it replaces.
                jinja2.PrefixLoader({"packaged": packaged}),
            ]
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["q"] = shell_quote
    env.filters["shjoin"] = shell_join
    env.filters["sbatch"] = sbatch_value
    return env


def render(
    name: str,
    context: dict[str, Any],
    overrides: Mapping[str, str] | None = None,
    folders: Iterable[Path] = (),
) -> str:
    """Render template `name`; a missing template or undefined variable is a one-line error."""
    import jinja2

    try:
        return environment(overrides, folders).get_template(name).render(**context)
    except jinja2.TemplateNotFound as e:
        raise TemplateError(
            f"template {e.name} not found (packaged, or among your overrides)"
        ) from e
    except jinja2.UndefinedError as e:
        raise TemplateError(
            f"template {name}: {e.message}; fix the template or pass the value"
        ) from e
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(
            f"template {e.filename or e.name or name} line {e.lineno}: {e.message}"
        ) from e
