"""The one exception hierarchy. The CLI turns any HpctrainError into a one-line message.

Every message says what is wrong and ends with how to fix it. `full_disk` recognises a full
filesystem or quota, whether it comes as an OSError, an SQLite error or a line of text (rsync's
or pip's stderr, a job's output).
"""

from __future__ import annotations

import errno


class HpctrainError(Exception):
    """Root of every error hpctrain reports to a user (exit code 1 unless set)."""

    exit_code = 1


class ConfigError(HpctrainError):
    """Raised when a workspace, profile or project file is missing or invalid."""


class InvalidName(HpctrainError):
    """Raised when a project, model or job name is unsafe or malformed."""


class GroundTruthError(HpctrainError):
    """Raised when ground truth fails validation; `problems` lists one line per file."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


class NotFoundError(HpctrainError):
    """Raised when a project, model or job that was named does not exist."""


class TemplateError(HpctrainError):
    """Raised when a job template is missing or fails to render."""


class RegistryError(HpctrainError):
    """Raised when the job registry or one of its records cannot be read, or is newer."""


class SchedulerError(HpctrainError):
    """Raised when submitting, querying or cancelling a job fails."""


class TransportError(HpctrainError):
    """Raised when the cluster side cannot be reached or a file cannot be moved."""


class Aborted(HpctrainError):
    """Raised when the user declined a confirmation."""


class DiskFullError(HpctrainError):
    """Raised when the cluster's filesystem or the user's quota is full while hpctrain writes
    there: nothing partial is left under a final name. The app layer adds what would free space."""

    @classmethod
    def writing(cls, reason: str, what: str, where: str) -> "DiskFullError":
        disk = "disk quota" if "quota" in reason else "disk"
        return cls(f"the cluster's {disk} is full ({reason}) while writing {what} to {where}")


# How a full disk or quota shows: the errno, and the text it prints as (strerror, SQLite).
FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
FULL_TEXTS = {
    "no space left on device": "no space left on device",
    "disk quota exceeded": "disk quota exceeded",
    "database or disk is full": "no space left on device",  # SQLite's SQLITE_FULL
}


def full_disk(error: BaseException | str | None) -> str | None:
    """'no space left on device' or 'disk quota exceeded' when `error` (an exception, its causes,
    or a text) says that the filesystem or the quota is full; else None."""
    seen = 0
    while isinstance(error, BaseException) and seen < 5:
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return FULL_ERRNOS[error.errno]
        found = full_disk(str(error))
        if found:
            return found
        error, seen = error.__cause__ or error.__context__, seen + 1
    if isinstance(error, str):
        lowered = error.lower()
        return next((why for text, why in FULL_TEXTS.items() if text in lowered), None)
    return None
