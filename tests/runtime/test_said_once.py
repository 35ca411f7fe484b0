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
