"""Devices and nodes as the launcher gave them (torchrun, SLURM), checked against the config.

Placeholder for the launch work: returns the Trainer kwargs unchanged.
"""

from __future__ import annotations

from typing import Any


def apply_launch_topology(kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs
