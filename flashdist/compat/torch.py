"""torch internals flashdist relies on, one small function each, each tested by name in tests/compat/test_torch.py."""

from __future__ import annotations


def dynamo_frame_compiles() -> int:
    """How many frames dynamo has compiled in this process so far (a recompile adds one).

    Relies on ``torch._dynamo.utils.counters["frames"]["total"]``, incremented once per frame
    compilation (first compiles and recompiles alike). No public API counts compilations:
    ``torch.compiler`` exposes none, and the recompile log (``TORCH_LOGS=recompiles``) is text.
    Tested by ``test_dynamo_counts_one_frame_compile_per_recompile``.

    Example:
        >>> before = dynamo_frame_compiles()
        >>> dynamo_frame_compiles() - before
        0
    """
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def dynamo_recompile_limit() -> int:
    """How many compiled versions of one frame dynamo keeps before it runs that frame eagerly.

    Relies on ``torch._dynamo.config.recompile_limit`` (named ``cache_size_limit`` before
    torch 2.7): reported next to a recompile count, so a reader knows when the compiled step
    stopped being compiled at all. Tested by ``test_dynamo_recompile_limit_is_a_positive_int``.

    Example:
        >>> dynamo_recompile_limit() > 0
        True
    """
    import torch._dynamo.config as config

    return int(getattr(config, "recompile_limit", None) or config.cache_size_limit)
