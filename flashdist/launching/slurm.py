"""sbatch scripts from the hand-editable template in ``slurm/``, and their submission.

``SbatchSpec`` validates everything a user typed (time format, counts, names) at construction;
``render_sbatch`` is a pure fill-in of ``{{placeholders}}``; ``submit_sbatch`` runs ``sbatch``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from flashdist.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parents[2] / "slurm" / "job.sbatch.template"
REQUEUE_SIGNAL = "SIGUSR1@90"  # Lightning's SLURMEnvironment listens for SIGUSR1
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_TIME = re.compile(r"(?:(\d+)-)?(\d{1,3}):(\d{2}):(\d{2})")


@dataclass(frozen=True)
class SbatchSpec:
    """One job: ``nodes`` x ``tasks_per_node`` ranks (one per device) running ``command`` via srun.

    ``gpus_per_node > 0`` gives one task per GPU; ``gpus_per_node == 0`` (the default: a CPU job)
    runs ``tasks_per_node`` ranks per node (default 1, as sbatch). ``partition=None`` leaves the
    choice to the cluster's default partition, as sbatch does.
    """

    command: tuple[str, ...]
    nodes: int
    time: str
    gpus_per_node: int = 0
    partition: str | None = None
    tasks_per_node: int | None = None
    account: str | None = None
    requeue: bool = True
    job_name: str = "flashdist"
    cpus_per_task: int = 1
    workdir: str = field(default_factory=lambda: str(Path.cwd()))
    log_dir: str = "slurm-logs"

    def __post_init__(self) -> None:
        if not self.command:
            raise ConfigError("no command for srun to run.", hint="pass --config FILE (runs `flashdist fit --config FILE`).")
        _count("--nodes", self.nodes, minimum=1)
        _count("--gpus-per-node", self.gpus_per_node, minimum=0)
        _count("--cpus-per-task", self.cpus_per_task, minimum=1)
        if self.tasks_per_node is not None:
            _count("--tasks-per-node", self.tasks_per_node, minimum=1)
            if self.gpus_per_node > 0 and self.tasks_per_node != self.gpus_per_node:
                raise ConfigError(
                    f"--tasks-per-node {self.tasks_per_node} with --gpus-per-node {self.gpus_per_node}: flashdist runs one task per GPU.",
                    accepted=f"--tasks-per-node {self.gpus_per_node}, or leave it out",
                )
        parse_time_limit(self.time)
        for flag, value in (("--partition", self.partition), ("--account", self.account), ("--job-name", self.job_name)):
            if value is not None and not _NAME.fullmatch(value):
                raise ConfigError(f"{flag} {value!r} is not a SLURM name.", accepted="letters, digits, _ . -")

    @property
    def ranks_per_node(self) -> int:
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return self.gpus_per_node or 1  # a CPU job without --tasks-per-node: one rank per node, as sbatch

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node


def parse_time_limit(text: str) -> int:
    """``[D-]HH:MM:SS`` -> seconds; anything else is a ConfigError.

    Example:
        >>> parse_time_limit("1-02:00:30")
        93630
    """
    match = _TIME.fullmatch(text or "")
    if match is None or int(match.group(3)) > 59 or int(match.group(4)) > 59:
        raise ConfigError(f"--time {text!r} is not a time limit.", accepted="HH:MM:SS or D-HH:MM:SS (minutes and seconds < 60)")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--time {text!r} is zero.", hint="give the job time to run, e.g. --time 01:00:00")
    return total


def render_sbatch(spec: SbatchSpec, template: str | None = None) -> str:
    """The sbatch script for ``spec`` (``template`` text defaults to slurm/job.sbatch.template).

    Example:
        >>> spec = SbatchSpec(("python", "fit.py"), nodes=1, tasks_per_node=2, time="00:10:00")
        >>> "#SBATCH --ntasks-per-node=2" in render_sbatch(spec)
        True
    """
    text = template if template is not None else _read_template(TEMPLATE)
    if spec.partition is None and "{{partition}}" in text:
        raise ConfigError("the sbatch template uses {{partition}}, but no --partition was given.",
                          hint="pass --partition, or use {{partition_line}} (left out for the cluster's default partition).")
    logs = log_dir(spec)
    values = {
        "job_name": spec.job_name,
        "partition": spec.partition or "",
        "partition_line": f"#SBATCH --partition={spec.partition}" if spec.partition else "# (no --partition: the cluster's default)",
        "account_line": f"#SBATCH --account={spec.account}" if spec.account else "# (no --account)",
        "nodes": str(spec.nodes),
        "tasks_per_node": str(spec.ranks_per_node),
        "gpus_line": f"#SBATCH --gpus-per-node={spec.gpus_per_node}" if spec.gpus_per_node else "# (CPU job: no GPUs requested)",
        "cpus_per_task": str(spec.cpus_per_task),
        "time": spec.time,
        "workdir": spec.workdir,
        "requeue_line": "#SBATCH --requeue" if spec.requeue else "#SBATCH --no-requeue",
        "signal_line": f"#SBATCH --signal={REQUEUE_SIGNAL}" if spec.requeue else "# (--no-requeue: no SIGUSR1 before the time limit)",
        "output": str(logs / "%x-%j.out"),
        "error": str(logs / "%x-%j.err"),
        "command": shlex.join(spec.command),
    }
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(values))
    if missing:
        raise ConfigError(f"the sbatch template has unknown placeholders {missing}.", accepted=sorted(values))
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


def log_dir(spec: SbatchSpec) -> Path:
    """Where the job's output and error files go (``log_dir`` under ``workdir`` unless absolute)."""
    return Path(spec.log_dir) if Path(spec.log_dir).is_absolute() else Path(spec.workdir) / spec.log_dir


def submit_sbatch(script: Path) -> int:
    """``sbatch --parsable script`` -> the job id; a refusal is a RuntimeError carrying sbatch's message."""
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch refused {script}: {proc.stderr.strip() or proc.stdout.strip()}")
    return int(proc.stdout.strip().split(";")[0])


def _read_template(path: Path) -> str:
    if not path.exists():
        raise ConfigError(f"sbatch template {path} is missing.", hint="pass --template PATH (a copy of slurm/job.sbatch.template).")
    return path.read_text()


def _count(flag: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} {value!r} is not a count.", accepted=f"an integer >= {minimum}")
