"""Slurm values are checked for meaning, not only for their characters: 99:99:99 and 0G are
refused before anything is rendered, with one line saying what is allowed."""

from __future__ import annotations

import pytest

from helpers import tree_snapshot
from hpctrain.core.errors import ConfigError
from hpctrain.jobs.requests import Resources, slurm_time, validate_resources

VALID_TIMES = [
    ("90", 90 * 60),  # minutes, any number of them
    ("1", 60),
    ("10:30", 10 * 60 + 30),  # minutes:seconds
    ("120:00", 120 * 60),
    ("05:00:00", 5 * 3600),  # hours:minutes:seconds
    ("48:00:00", 48 * 3600),  # hours beyond 23 without days: Slurm reads 2 days
    ("0:0:30", 30),
    ("2-12", (2 * 24 + 12) * 3600),  # days-hours
    ("1-0", 24 * 3600),
    ("1-12:30", (36 * 60 + 30) * 60),  # days-hours:minutes
    ("1-00:00:00", 24 * 3600),  # days-hours:minutes:seconds
    ("7-23:59:59", 7 * 86400 + 86399),
    ("9999-23:59:59", 9999 * 86400 + 86399),
]
INVALID_TIMES = [
    "99:99:99",  # minutes and seconds over 59
    "05:60:00",
    "05:00:60",
    "10:75",  # seconds over 59
    "1-24",  # hours after days over 23
    "1-25:00:00",
    "1-12:60",
    "0",  # 0 is no limit at all to Slurm
    "00:00:00",
    "0-0",
    "5h",
    "-1",
    "1--2",
    "1:2:3:4",
    "",
    "12345-00",  # days beyond 4 digits
    "999999:00:00",  # 41,666 days: Slurm's seconds would overflow
    "\u0665:00:00",  # an Arabic-Indic digit five: a digit to Python, not to Slurm
]


@pytest.mark.parametrize("text, seconds", VALID_TIMES)
def test_valid_slurm_times(text, seconds):
    assert slurm_time(text) == seconds
    assert validate_resources(Resources(time=text), "here").time == text


@pytest.mark.parametrize("text", INVALID_TIMES)
def test_times_without_meaning_are_refused_in_one_line(text):
    assert slurm_time(text) is None
    with pytest.raises(ConfigError) as refused:
        validate_resources(Resources(time=text), "projects/Demo.yaml resources")
    message = str(refused.value)
    assert message.startswith(f"projects/Demo.yaml resources: time {text!r} is not a Slurm time")
    assert "minutes and seconds under 60, hours under 24 after days" in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["32G", "500M", "1T", "4096", "1K", "64G"])
def test_valid_slurm_sizes(text):
    assert validate_resources(Resources(mem=text), "here").mem == text


@pytest.mark.parametrize("text", ["0G", "0", "000M", "-1G", "32GB", "32g", "1.5G", "G", "32 G",
                                  "1P", "\u0663\u0662G"])
def test_sizes_without_meaning_are_refused_in_one_line(text):
    with pytest.raises(ConfigError) as refused:
        validate_resources(Resources(mem=text), "command-line resources")
    assert str(refused.value) == (
        f"command-line resources: mem {text!r} is not a Slurm size: a whole number above 0 with "
        "an optional K, M, G or T suffix (e.g. 32G, 500M; megabytes without one)")


@pytest.mark.parametrize("flag, value, fragment", [
    ("--time", "99:99:99", "time '99:99:99' is not a Slurm time"),
    ("--time", "0", "time '0' is not a Slurm time"),
    ("--mem", "0G", "mem '0G' is not a Slurm size"),
])
def test_submit_refuses_them_and_writes_nothing(cli, workspace, demo_project, flag, value,
                                                fragment):
    assert cli("push", "Demo").exit_code == 0
    before = tree_snapshot(workspace)
    result = cli("submit", "compile", "Demo", flag, value, "--dry-run")
    assert result.exit_code == 1
    line, = result.stderr.strip().splitlines()
    assert line.startswith("hpctrain: error: ") and fragment in line
    assert tree_snapshot(workspace) == before


def test_the_scheduler_reads_times_with_the_same_parser():
    from hpctrain.cluster.scheduler import time_to_minutes
    from hpctrain.core.errors import SchedulerError

    assert time_to_minutes("48:00:00") == 48 * 60 and time_to_minutes("1-12") == 36 * 60
    with pytest.raises(SchedulerError):
        time_to_minutes("99:99:99")
