"""Rendering job scripts from Jinja templates that users can override.

Search path: --template-dir, then the workspace's templates/, then the user config dir's
templates/, then the packaged ones. A user template of the same name can
`{% extends "packaged/kraken/transcription.sh.j2" %}` and replace one block. Values reach the shell only through the `q` and `shjoin` filters.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Iterable

from .errors import TemplateError

_SAFE_DIRECTIVE = re.compile(r"[A-Za-z0-9_.,:@%+=/\-]*")


def shell_quote(value: Any) -> str:
    """Quote one value for POSIX sh; a ShellVar expands at run time inside double quotes."""
    from .kraken import ShellVar

    if isinstance(value, ShellVar):
        return f'"${{{value}}}"'
    return shlex.quote(str(value))


def shell_join(values: Iterable[Any]) -> str:
    return " ".join(shell_quote(v) for v in values)


def sbatch_value(value: Any) -> str:
    """A value for an `#SBATCH` line: no quoting exists there, so anything unusual is refused."""
    text = str(value)
    if not _SAFE_DIRECTIVE.fullmatch(text):
        raise TemplateError(f"value {text!r} cannot go into an #SBATCH directive; use letters, digits and ._-:@/")
    return text


def packaged_template_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("hpctrain.templates")))


def search_path(template_dir: Path | None, workspace: Path | None) -> list[Path]:
    from .config import user_template_dir

    candidates = [template_dir, workspace / "templates" if workspace else None, user_template_dir(),
                  packaged_template_dir()]
    return [p for p in candidates if p is not None and p.is_dir()]


def environment(paths: list[Path]):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([
            jinja2.FileSystemLoader([str(p) for p in paths]),
            # The packaged templates stay reachable under this prefix, so an override can extend its original.
            jinja2.PrefixLoader({"packaged": jinja2.FileSystemLoader(str(packaged_template_dir()))}),
        ]),
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


def render(name: str, context: dict[str, Any], paths: list[Path]) -> str:
    """Render template `name`; a missing template or undefined variable is a one-line TemplateError."""
    import jinja2

    try:
        return environment(paths).get_template(name).render(**context)
    except jinja2.TemplateNotFound as e:
        raise TemplateError(f"template {e.name} not found in {', '.join(map(str, paths))}") from e
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template {name}: {e.message}; fix the template or pass the value") from e
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template {e.filename or name} line {e.lineno}: {e.message}") from e
