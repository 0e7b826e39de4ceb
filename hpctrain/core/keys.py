"""The one unknown-key check of every file a user edits (workspace, project, alerts).

A typo must never fall back silently to a default, so an unknown key is an error that lists
the known ones.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .errors import ConfigError


def reject_unknown(
    data: Mapping[str, Any], known: Iterable[str], where: str, what: str = "key"
) -> None:
    known = sorted(known)
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )


def section(data: Any, where: str) -> Mapping[str, Any]:
    """A nested mapping of a file (None = empty), or a one-line error."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    return data
