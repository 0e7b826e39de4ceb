"""The one exception hierarchy. The CLI turns any HpctrainError into a one-line message.

Every message says what is wrong and ends with how to fix it.
"""


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
