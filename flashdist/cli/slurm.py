"""``flashdist slurm``: write an sbatch script for a config, show it, optionally submit it.

Examples:
    flashdist slurm --config configs/multinode_slurm.yaml --nodes 2 --gpus-per-node 4 \\
        --partition gpu --time 04:00:00 --account myproj --submit
    flashdist slurm --config configs/quickstart.yaml --nodes 1 --tasks-per-node 2 --time 00:10:00 \\
        --script-out job.sbatch -- --trainer.max_epochs=1     # a CPU job on the default partition

Arguments after ``--`` are appended to ``flashdist fit --config FILE`` (overrides). Without
``--config`` they are the whole command srun runs (e.g. ``-- python train.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flashdist.errors import ConfigError

HELP = "write (and optionally submit) an sbatch script for a config"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flashdist slurm",
        usage="flashdist slurm --config FILE --nodes N --time HH:MM:SS [--gpus-per-node G] [--partition P] [options] [-- overrides]",
        description=HELP + ". One task per device; srun runs the fit; SIGUSR1 90 s before the end checkpoints and requeues.",
    )
    p.add_argument("--config", help="YAML config for `flashdist fit`")
    p.add_argument("--nodes", type=int, required=True, help="nodes (srun starts ranks on each)")
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node, one task each (default 0: a CPU job)")
    p.add_argument("--tasks-per-node", type=int, help="ranks per node for a CPU job (default 1, as sbatch)")
    p.add_argument("--cpus-per-task", type=int, default=1, help="CPU cores per rank (default 1)")
    p.add_argument("--partition", help="default: the cluster's default partition (no #SBATCH --partition line)")
    p.add_argument("--time", required=True, help="time limit, HH:MM:SS or D-HH:MM:SS")
    p.add_argument("--account")
    p.add_argument("--requeue", action=argparse.BooleanOptionalAction, default=True, help="requeue on preemption/time limit (default on)")
    p.add_argument("--job-name", default="flashdist")
    p.add_argument("--log-dir", default="slurm-logs", help="job output and error files, relative to the working dir (default slurm-logs)")
    p.add_argument("--script-out", help="where to write the script (default <log-dir>/<job-name>.sbatch)")
    p.add_argument("--template", help="an edited copy of slurm/job.sbatch.template")
    p.add_argument("--submit", action="store_true", help="submit with sbatch and print the job id")
    return p


def run(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser().parse_args(argv[:split])
    trailing = argv[split + 1 :]
    try:
        from flashdist.launching.slurm import SbatchSpec, log_dir, render_sbatch, submit_sbatch

        spec = SbatchSpec(
            command=_command(args.config, trailing),
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            tasks_per_node=args.tasks_per_node,
            cpus_per_task=args.cpus_per_task,
            partition=args.partition,
            time=args.time,
            account=args.account,
            requeue=args.requeue,
            job_name=args.job_name,
            log_dir=args.log_dir,
        )
        template = _read(args.template) if args.template else None
        script = render_sbatch(spec, template)
    except ConfigError as error:
        print(f"flashdist slurm: {error}", file=sys.stderr)
        return 2
    log_dir(spec).mkdir(parents=True, exist_ok=True)  # SLURM does not create the output's folder
    out = Path(args.script_out) if args.script_out else log_dir(spec) / f"{spec.job_name}.sbatch"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(script)
    out.chmod(0o755)
    print(f"# {out}  ({spec.nodes} node(s) x {spec.ranks_per_node} rank(s) = world size {spec.world_size})")
    print(script, flush=True)
    if not args.submit:
        print(f"# submit with: sbatch {out}")
        return 0
    try:
        job_id = submit_sbatch(out)
    except (RuntimeError, FileNotFoundError) as error:
        print(f"flashdist slurm: {error}", file=sys.stderr)
        return 1
    print(f"Submitted batch job {job_id}", flush=True)
    return 0


def _command(config: str | None, trailing: list[str]) -> tuple[str, ...]:
    if config is None:
        if not trailing:
            raise ConfigError("nothing to run.", hint="pass --config FILE, or a command after '--'.")
        return tuple(trailing)
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"--config {config!r} is not a file.", hint="pass the YAML you would give `flashdist fit --config`.")
    return (_cli_executable(), "fit", "--config", str(path.resolve()), *trailing)


def _cli_executable() -> str:
    """The flashdist beside this Python: compute nodes need not have the venv on PATH."""
    beside = Path(sys.executable).parent / "flashdist"
    return str(beside) if beside.exists() else "flashdist"


def _read(path: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"--template {path!r} is not a file.", hint="copy slurm/job.sbatch.template and point at the copy.")
    return Path(path).read_text()
