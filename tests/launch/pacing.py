"""A callback that holds a fit at one step until the test's signal has arrived (tests/launch/paced.yaml adds it).

After optimizer step ``step`` rank 0 writes ``<default_root_dir>/reached-step-<step>`` and
waits until it has received SIGUSR1 (the test sends it once that file exists). Its relay hands
the signal on to the handler that was installed (flashdist's), then puts that handler back, so
the fit sees the signal exactly as it would without the pause. The other rank waits in the next
step's collective meanwhile: the signal always lands at the same step, however slow or fast the
machine. Only the first attempt pauses: a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0)
runs straight through.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lightning.pytorch import Callback

SIGNAL_TIMEOUT_S = 300.0  # the test has failed (and cancelled its job) long before this


class PauseAtStep(Callback):
    def __init__(self, step: int = 10):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not trainer.is_global_zero or trainer.global_step != self.step or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
            return
        installed = signal.getsignal(signal.SIGUSR1)
        received = []

        def relay(signum, frame):
            signal.signal(signal.SIGUSR1, installed)
            received.append(signum)
            if callable(installed):
                installed(signum, frame)

        signal.signal(signal.SIGUSR1, relay)
        Path(trainer.default_root_dir, f"reached-step-{self.step}").write_text(str(os.getpid()))
        deadline = time.monotonic() + SIGNAL_TIMEOUT_S
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs between two sleeps
        signal.signal(signal.SIGUSR1, installed)
