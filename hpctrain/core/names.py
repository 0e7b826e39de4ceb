"""Validation of every name that becomes a path or reaches a shell: projects, models, jobs."""

from __future__ import annotations

import re

from .errors import InvalidName

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(value: str, what: str = "name") -> str:
    """Return `value` if it is a safe name (letters, digits, `.`, `_`, `-`; no `..`)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise InvalidName(
            f"invalid {what} {value!r}: use letters, digits, '.', '_' or '-' "
            f"(start with a letter or digit, no '..', at most 100 characters)"
        )
    return value


def check_job_id(value: str | int) -> int:
    """Return the job id as an int, or raise a one-line error."""
    text = str(value)
    if not text.isdigit() or len(text) > 12:
        raise InvalidName(
            f"invalid job id {text!r}: a job id is a number as shown by 'hpctrain status'"
        )
    return int(text)
