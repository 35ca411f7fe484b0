"""Run a launcher process in the foreground: forward signals, pass its output on, explain failures.

The launcher's stderr goes through unchanged; flashdist only watches it for the errors that
mean "the nodes never met" so it can say, in one line at the end, what to check.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)  # what SLURM and flashdist's preemption handler use
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a preempted fit exits with it (runtime/preemption.py), the launcher reads it
RENDEZVOUS_FAILURES = ("RendezvousTimeoutError", "RendezvousConnectionError", "RendezvousClosedError", "RendezvousError")


def run_foreground(argv: list[str], explain: Callable[[set[str]], str | None] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` (with ``env``, else this process's environment); return its exit code. ``explain(markers_seen)`` may add a closing message.

    When a preemption signal (SIGUSR1, SIGTERM) was forwarded and the child then failed, the
    exit code is :data:`EXIT_PREEMPTED` (75), as a preempted fit's own: torchrun itself only
    reports "got signal".

    Example:
        >>> run_foreground([sys.executable, "-c", "pass"])
        0
    """
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, env=None if env is None else dict(env))
    seen: set[str] = set()
    forwarded: list[int] = []
    reader = threading.Thread(target=_pump, args=(proc, seen), daemon=True)
    reader.start()
    previous = {sig: signal.signal(sig, lambda signum, _frame: _forward(proc, signum, forwarded)) for sig in FORWARDED_SIGNALS}
    try:
        returncode = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reader.join(timeout=5)
    preempted = [s for s in forwarded if s in PREEMPTION_SIGNALS]
    if returncode != 0 and preempted:
        print(
            f"flashdist launch: stopped by {signal.Signals(preempted[0]).name} (forwarded to the workers, which checkpoint "
            f"and stop); exit {EXIT_PREEMPTED}. HINT: resume with the same command and `flashdist fit ... --ckpt_path=auto`.",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_PREEMPTED
    if returncode != 0 and explain is not None:
        message = explain(seen)
        if message:
            print(message, file=sys.stderr, flush=True)
    return returncode


def _pump(proc: subprocess.Popen, seen: set[str]) -> None:
    assert proc.stderr is not None
    out = sys.stderr.buffer
    for line in iter(proc.stderr.readline, b""):
        out.write(line)
        out.flush()
        text = line.decode(errors="replace")
        seen.update(marker for marker in RENDEZVOUS_FAILURES if marker in text)


def _forward(proc: subprocess.Popen, signum: int, forwarded: list[int]) -> None:
    if proc.poll() is None:
        forwarded.append(signum)
        proc.send_signal(signum)
