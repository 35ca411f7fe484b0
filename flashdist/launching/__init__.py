"""Launch plumbing: the torchrun command, sbatch scripts for SLURM, and running them.

Pure builders (``torchrun_command``, ``render_sbatch``) take frozen, validated specs; the CLI
(``flashdist launch``, ``flashdist slurm``) only parses arguments into specs and runs them.
"""

from flashdist.launching.slurm import SbatchSpec, parse_time_limit, render_sbatch, submit_sbatch
from flashdist.launching.torchrun import TorchrunSpec, torchrun_command

__all__ = ["SbatchSpec", "TorchrunSpec", "parse_time_limit", "render_sbatch", "submit_sbatch", "torchrun_command"]
