"""The ``flashdist`` command: fit | validate | plan | launch | slurm | bench."""
