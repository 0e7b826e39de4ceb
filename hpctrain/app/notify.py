"""`hpctrain notify test`: one test notification through the cluster side, to check a webhook
before a job depends on it."""

from __future__ import annotations

from ..backends import connect
from ..core.config import Workspace
from ..core.errors import ConfigError
from ..core.webhook import choose
from .projects import load_project


def test(workspace: Workspace, project: str | None = None) -> dict:
    """Send one test notification to the webhook the jobs would use: the project's (with
    `project`), else the profile's. Returns to (redacted), status, sent_from."""
    setting = load_project(workspace, project).notify if project else None
    hook = choose(setting, workspace.profile.notify)
    if hook is None:
        where = f"projects/{project}.yaml or " if project else ""
        raise ConfigError(
            f"no notify setting for {f'project {project}' if project else 'this profile'}: add "
            f"'notify: https://...' to {where}profile {workspace.profile.name!r} in hpctrain.yaml")
    with connect(workspace) as transport:
        return transport.cluster.notify_test(hook.to_json())
