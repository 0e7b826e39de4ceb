"""Slurm state mapping and time parsing (the real sbatch/sacct path is in
tests/integration/test_slurm.py)."""

from __future__ import annotations

import pytest

from hpctrain.cluster.scheduler import _fields, _state, SLURM_STATES, directives, time_to_minutes
from hpctrain.cluster.registry import JobState


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("30", 30),
        ("05:00:00", 300),
        ("1-00:00:00", 1440),
        ("2-12", 3600),
        ("10:30", 10.5),
        ("0:0:30", 0.5),
    ],
)
def test_slurm_time_formats(text, minutes):
    assert time_to_minutes(text) == minutes


def test_sacct_lines_map_onto_job_states():
    found = {job_id: _state(state) for job_id, state in
             _fields("11|COMPLETED\n12|CANCELLED by 1000\n13|PREEMPTED\n14|WEIRD_NEW_STATE\n")}
    assert found == {
        "11": JobState.COMPLETED,
        "12": JobState.CANCELLED,
        "13": JobState.PENDING,
        "14": JobState.UNKNOWN,
    }


def test_every_mapped_slurm_state_is_a_job_state():
    assert all(isinstance(v, JobState) for v in SLURM_STATES.values())
    assert SLURM_STATES["TIMEOUT"].final and not SLURM_STATES["REQUEUED"].final


def test_directives_are_the_scripts_sbatch_lines():
    script = "#!/bin/bash\n#SBATCH --time=01:00:00\n# comment\n#SBATCH --gres=gpu:1\nset -e\n"
    assert directives(script) == ["#SBATCH --time=01:00:00", "#SBATCH --gres=gpu:1"]
