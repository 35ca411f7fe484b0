"""The DeepSpeed op build the strategy fits need (built once per session, see tests/strategies/conftest.py)."""

from tests.strategies.conftest import deepspeed_ops_built  # noqa: F401
