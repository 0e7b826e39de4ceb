"""The grid of a sweep (jobs/sweep.py): `--set KEY=V1,V2` parsed against the type of each
training parameter, hostile values refused in one line, the cartesian product in order, and a
request per point (kraken parameters, torchrun script options)."""

from __future__ import annotations

import pytest

from hpctrain.core.errors import ConfigError, HpctrainError
from hpctrain.jobs.requests import JobRequest, Resources, Split, TorchrunRequest, TrainParams
from hpctrain.jobs.sweep import (
    MAX_TASKS,
    SweepError,
    SweepRequest,
    parse_sets,
    points,
    with_values,
)


def kraken() -> JobRequest:
    return JobRequest(kind="transcription", project="Demo", format="page", base="tridis_v2",
                      params=TrainParams(), split=Split(), resources=Resources())


def torchrun() -> TorchrunRequest:
    return TorchrunRequest(project="t", target="train.py", script_text="print(1)\n",
                           args=("--data", "/scratch/d"), resources=Resources(),
                           nproc_per_node=1)


def test_values_take_the_type_of_their_parameter():
    grid = parse_sets(["learning_rate=1e-4,3e-4,1e-3", "augment=true,false", "epochs=5,10",
                       "optimizer=Adam,SGD"])
    assert grid == {"learning_rate": [1e-4, 3e-4, 1e-3], "augment": [True, False],
                    "epochs": [5, 10], "optimizer": ["Adam", "SGD"]}
    assert type(grid["epochs"][0]) is int and type(grid["augment"][0]) is bool


def test_the_grid_is_every_combination_the_last_key_fastest():
    grid = parse_sets(["learning_rate=1e-4,3e-4,1e-3", "augment=true,false"])
    found = points(grid)
    assert len(found) == 6
    assert found[:3] == [{"learning_rate": 1e-4, "augment": True},
                         {"learning_rate": 1e-4, "augment": False},
                         {"learning_rate": 3e-4, "augment": True}]


@pytest.mark.parametrize("item, words", [
    ("learning_rate=$(rm -rf ~)", "not a positive number"),
    ("learning_rate=1e-4;reboot", "not a positive number"),
    ("learning_rate=1e-4\n#SBATCH --x", "not a positive number"),
    ("learning_rate=nan", "not a positive number"),
    ("learning_rate=-1", "not a positive number"),
    ("epochs=a;b", "not a whole number"),
    ("epochs=`id`", "not a whole number"),
    ("epochs=2.5", "not a whole number"),
    ("augment=maybe", "not true or false"),
    ("optimizer=Adam;rm", "not one of Adam, AdamW, SGD, RMSprop"),
    ("dropout=0.1,0.2", "not a training parameter"),
    ("$(id)=1", "not a training parameter"),
    ("spec=[1,48,0,1 Lbx100]", "holds commas"),
    ("learning_rate=", "an empty value"),
    ("learning_rate=1e-4,,3e-4", "an empty value"),
    ("learning_rate", "has no '='"),
    ("learning_rate=1e-4,1e-4", "given twice"),
])
def test_hostile_and_malformed_values_are_refused_in_one_line(item, words):
    with pytest.raises(SweepError, match=words.replace("(", r"\(")) as caught:
        parse_sets([item])
    assert "\n" not in str(caught.value) and isinstance(caught.value, HpctrainError)


def test_a_key_given_twice_and_an_empty_sweep_are_refused():
    with pytest.raises(SweepError, match="given twice"):
        parse_sets(["epochs=5", "epochs=10"])
    with pytest.raises(SweepError, match="at least one --set"):
        parse_sets([])


def test_a_grid_over_the_array_limit_is_refused():
    many = ",".join(str(i) for i in range(1, 101))
    assert len(points(parse_sets([f"epochs={many}", "lag=1,2,3,4,5,6,7,8,9,10"]))) == MAX_TASKS
    with pytest.raises(SweepError, match=f"1100 points, more than {MAX_TASKS}"):
        parse_sets([f"epochs={many}", "lag=1,2,3,4,5,6,7,8,9,10,11"])


def test_each_point_changes_only_its_parameters_and_is_checked_again():
    request = with_values(kraken(), {"learning_rate": 3e-4, "augment": False})
    assert (request.params.learning_rate, request.params.augment) == (3e-4, False)
    assert request.params.epochs == TrainParams().epochs and request.base == "tridis_v2"
    with pytest.raises(ConfigError, match="min_epochs must be a whole number"):
        with_values(kraken(), {"min_epochs": 0})


def test_torchrun_keys_are_script_options_after_the_jobs_own_arguments():
    grid = parse_sets(["lr=0.1,0.01", "batch-size=32"], torchrun=True)
    assert grid == {"lr": ["0.1", "0.01"], "batch-size": ["32"]}
    request = with_values(torchrun(), points(grid)[1])
    assert request.args == ("--data", "/scratch/d", "--lr", "0.01", "--batch-size", "32")


@pytest.mark.parametrize("item", ["lr=$(rm -rf ~)", "lr=a;b", "lr=a b", "lr='x'", "lr=1\n2",
                                  "--lr=1", "l r=1", "lr=$HOME"])
def test_torchrun_values_and_names_with_shell_characters_are_refused(item):
    with pytest.raises(SweepError):
        parse_sets([item], torchrun=True)


def test_a_sweep_request_crosses_json_and_is_checked_again_on_the_cluster_side():
    grid = parse_sets(["learning_rate=1e-4,3e-4", "augment=true,false"])
    sent = SweepRequest(kraken(), tuple(points(grid)), 2, grid)
    back = SweepRequest.from_json(sent.to_json())
    assert back == sent and back.check() is back
    forged = SweepRequest(kraken(), ({"learning_rate": "$(id)"},))
    with pytest.raises(SweepError, match="not a positive number"):
        forged.check()
    with pytest.raises(SweepError, match="--max-parallel"):
        SweepRequest(kraken(), ({"epochs": 3},), 0).check()
    runs = SweepRequest(torchrun(), ({"lr": "0.1"},))
    assert SweepRequest.from_json(runs.to_json()).request == torchrun()
