"""What every test gets: the process environment as it was before the test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _process_environment_restored():
    # An in-process fit changes process-wide variables: DeepSpeed's init_distributed sets RANK,
    # LOCAL_RANK, NODE_RANK and MASTER_ADDR, Lightning sets PL_GLOBAL_SEED. A later test's
    # subprocess fit that inherits LOCAL_RANK believes a launcher started it, so its rank 0 never
    # starts rank 1 and waits for it until the test's timeout (seen in a full-suite run).
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
