"""The device a benchmark runs on: the one thing the CUDA path of ``bench fit`` / ``bench schedulers`` changes.

Every harness, workload and timing loop is the same code on ``cpu`` and ``cuda``; what differs
is read from here: where tensors live, the process-group backend, Lightning's accelerator name,
and (``bench schedulers``) whether the optimizer step can be captured in a CUDA graph. A device
this machine does not have is refused before any work starts.
"""

from __future__ import annotations

import os
from typing import Literal

from flashdist.errors import ConfigError

BenchDevice = Literal["cpu", "cuda"]
DEVICES: tuple[BenchDevice, ...] = ("cpu", "cuda")


def check_device(device: str, processes: int = 1, flag: str = "--device") -> BenchDevice:
    """``device`` if this machine can run ``processes`` processes on it, one device each; else a ConfigError.

    Example:
        >>> check_device("cpu", processes=2)
        'cpu'
    """
    if device not in DEVICES:
        raise ConfigError(f"{flag} {device!r} is not a device the benchmarks run on.", accepted=DEVICES,
                          hint=f"{flag} cpu, or {flag} cuda on a machine with an NVIDIA GPU.")
    if device == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < processes:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"{flag} cuda with {processes} process(es), one GPU each, but this machine has {count} CUDA "
                f"device(s) (torch {torch.__version__}, {build}).",
                hint=f"run it where torch.cuda.device_count() >= {processes}, or drop {flag} cuda (the default is cpu).",
            )
    return device  # type: ignore[return-value]


def backend(device: str) -> str:
    """The process-group backend a hand-written multi-process loop starts on this device."""
    return "nccl" if device == "cuda" else "gloo"


def lightning_accelerator(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def local_device(device: str) -> str:
    """This process's device: ``cuda:<LOCAL_RANK>`` under torchrun on CUDA (and made current), else ``cpu``."""
    if device != "cuda":
        return "cpu"
    import torch

    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def device_name(device: str) -> str:
    """What the results say the device was: ``cpu``, or the GPU's name (``cuda: NVIDIA H100 80GB HBM3``)."""
    if device != "cuda":
        return "cpu"
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}"
