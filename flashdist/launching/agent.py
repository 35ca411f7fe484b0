"""torchrun's agent in this process, so ``flashdist launch`` can end a config error with status 2.

``flashdist launch`` prints the torchrun command and runs ``python -m flashdist.launching.agent``
with the same arguments: torchrun itself, with one difference. When every failed worker exited
with flashdist's config-error status (2: global rank 0 printed the error, the others left quietly,
runtime/said_once.py), the job ends with status 2 and nothing more, instead of torchrun's status 1,
its ``ChildFailedError`` traceback and its per-worker failure log, which would repeat a message
already said. (A rank the agent stopped with SIGTERM after rank 0's exit counts as quiet: under
load it may not have reached the same error yet.) Any other failure is reported exactly as torchrun reports it.
"""

from __future__ import annotations

import logging
import re
import signal
import sys

from flashdist.errors import CONFIG_ERROR_EXIT_STATUS

# torch/distributed/elastic/agent/server/api.py and multiprocessing/api.py log the first failure
# as "failed (exitcode: N) local_rank: ..." at ERROR before raising ChildFailedError.
_CONFIG_ERROR_EXIT_LOG = re.compile(rf"failed \(exitcode: {CONFIG_ERROR_EXIT_STATUS}\) local_rank: ")
_AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.distributed.elastic.agent.server.api")


class _DropConfigErrorExits(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _CONFIG_ERROR_EXIT_LOG.match(record.getMessage())


def main(argv: list[str]) -> int:
    """Run torchrun with ``argv`` (its own options, then the command); the job's exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in _AGENT_LOGGERS:
        logging.getLogger(name).addFilter(_DropConfigErrorExits())
    try:
        run(parse_args(argv))
    except ChildFailedError as failed:
        if is_config_error_exit(failed.get_first_failure()[1].exitcode, [f.exitcode for f in failed.failures.values()]):
            return CONFIG_ERROR_EXIT_STATUS  # rank 0 said it (runtime/said_once.py)
        raise  # torchrun's own report: the traceback and the failure table
    return 0


def is_config_error_exit(first_exit: int, exits: list[int]) -> bool:
    """Whether a failed job ended on a config error: the first worker to fail exited 2, the others
    too or were stopped by the agent then (SIGTERM: a rank still on its way to the same error).

    Example:
        >>> is_config_error_exit(2, [2, -15]), is_config_error_exit(1, [1, 2]), is_config_error_exit(2, [2, -9])
        (True, False, False)
    """
    stopped_by_agent = -signal.SIGTERM
    return first_exit == CONFIG_ERROR_EXIT_STATUS and all(code in (CONFIG_ERROR_EXIT_STATUS, stopped_by_agent) for code in exits)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
