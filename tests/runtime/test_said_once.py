"""A ConfigError is said once per job: by global rank 0, or by the one rank that alone found it."""

from __future__ import annotations

import pytest
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from flashdist.errors import ConfigError
from flashdist.runtime.said_once import CONFIG_ERROR_EXIT_STATUS, config_error_said_once


@pytest.fixture
def rank_one(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)


def test_rank_zero_raises_the_error_every_rank_found():
    with pytest.raises(ConfigError, match="bad batch"):
        with config_error_said_once():
            raise ConfigError("bad batch")


def test_another_rank_leaves_quietly_with_the_config_error_status(rank_one):
    with pytest.raises(SystemExit) as leaving:
        with config_error_said_once():
            raise ConfigError("bad batch")
    assert leaving.value.code == CONFIG_ERROR_EXIT_STATUS


def test_an_error_only_this_rank_found_is_raised_on_that_rank(rank_one):
    # e.g. a payload in rank 1's own ZeRO optimizer shard, which rank 0 never reads
    with pytest.raises(ConfigError, match="refused to unpickle"):
        with config_error_said_once():
            raise ConfigError("refused to unpickle zero_pp_rank_1_mp_rank_00_optim_states.pt", this_rank_only=True)


def test_only_a_launcher_that_stops_its_workers_together_makes_a_quiet_rank_wait():
    from flashdist.runtime.said_once import launched_by

    assert launched_by({"TORCHELASTIC_RUN_ID": "flashdist", "RANK": "1"}) == "torchrun"
    assert launched_by({"SLURM_STEP_ID": "0", "SLURM_PROCID": "1"}) == "srun"
    assert launched_by({"SLURM_JOB_ID": "7"}) is None  # the batch script itself, not a task of a step
    assert launched_by({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) is None  # Lightning's own launcher kills its children itself


def test_a_script_run_without_a_launcher_keeps_pythons_traceback():
    import sys

    from flashdist.runtime.said_once import config_error_hook

    assert sys.excepthook is not config_error_hook  # pytest is no launched worker
