"""Shell quoting: the only way a value reaches a job script (`q`, `shjoin` and `sbatch` filters)."""

from __future__ import annotations

import re
import shlex
from typing import Any, Iterable

from ..core.errors import TemplateError

_SAFE_DIRECTIVE = re.compile(r"[A-Za-z0-9_.,:@%+=/\-]*")


class ShellVar(str):
    """A value the script expands at run time (`"$CPUS"`), never quoted away."""


CPUS = ShellVar("CPUS")
BEST = ShellVar("BEST_MODEL")
RESUME = ShellVar("RESUME")
KETOS_PYTHON = ShellVar("KETOS_PYTHON")  # kraken's own interpreter, found beside ketos


def shell_quote(value: Any) -> str:
    """Quote one value for POSIX sh; a ShellVar expands at run time inside double quotes."""
    if isinstance(value, ShellVar):
        return f'"${{{value}}}"'
    return shlex.quote(str(value))


def shell_join(values: Iterable[Any]) -> str:
    return " ".join(shell_quote(v) for v in values)


def sbatch_value(value: Any) -> str:
    """A value for an `#SBATCH` line: no quoting exists there, so anything unusual is refused."""
    text = str(value)
    if not _SAFE_DIRECTIVE.fullmatch(text):
        raise TemplateError(
            f"value {text!r} cannot go into an #SBATCH directive; use letters, digits and ._-:@/"
        )
    return text
