"""flashdist/bench/gpu_check.sh, the prepared GPU pass: it parses, fits its 9-minute slot, and every command
it runs accepts the arguments it is given (checked against each command's own parser, here on the CPU)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from flashdist.bench import packed_attention
from flashdist.cli.bench import parser as bench_parser

SCRIPT = Path(__file__).resolve().parents[2] / "flashdist" / "bench" / "gpu_check.sh"
SLOT_S = 540  # a lent machine gives 15 minutes, starting it takes minutes, and a rerun must fit


def _runs() -> list[tuple[str, int, list[str]]]:
    """(name, timeout, command) of every ``run NAME TIMEOUT COMMAND...`` line, continuations joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    runs = []
    for line in text.splitlines():
        if line.startswith("run "):
            words = shlex.split(line.replace('"$PY"', "python").replace("$OUT", "/tmp/out").replace('"$ATTENTIONS"', "sdpa"))
            runs.append((words[1], int(words[2]), words[3:]))
    return runs


def test_the_script_parses_and_its_steps_fit_the_slot():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    runs = _runs()
    assert [name for name, _, _ in runs] == ["machine", "gpu-tests", "gpu-tests-strategies", "bench-syncs", "bench-fit",
                                             "bench-schedulers", "bench-ckpt", "packed-attention"]
    assert sum(limit for _, limit, _ in runs) <= SLOT_S


@pytest.mark.parametrize("name", ["bench-syncs", "bench-fit", "bench-schedulers", "bench-ckpt", "packed-attention"])
def test_every_command_accepts_the_arguments_the_script_gives_it(name):
    (command,) = [command for run_name, _, command in _runs() if run_name == name]
    if command[:3] == ["python", "-m", "flashdist.cli.main"]:
        args = bench_parser().parse_args(command[3:][1:])  # after "bench"
        assert getattr(args, "device", None) == "cuda" and args.what == command[4]
    else:
        assert command[:3] == ["python", "-m", "flashdist.bench.packed_attention"]
        assert packed_attention.parser().parse_args(command[3:]).device == "cuda"


def test_the_gpu_tests_it_selects_are_marked():
    for command in [command for name, _, command in _runs() if name.startswith("gpu-tests")]:
        assert command[command.index("-m", 3) + 1] == "gpu"
    marked = subprocess.run(["grep", "-rlE", "mark.gpu", str(SCRIPT.parents[2] / "tests")], capture_output=True, text=True).stdout
    for expected in ("test_bench_fit.py", "test_bench_graphed.py", "test_bench_syncs.py", "test_gpu.py", "test_packing.py"):
        assert expected in marked


def test_flash_attention_without_a_gpu_is_refused_before_a_model_is_built(capsys):
    assert packed_attention.main(["--device", "cpu", "--attentions", "sdpa,flash_attention_2"]) == 2
    assert "flash_attention_2 needs a CUDA device and the flash-attn package" in capsys.readouterr().err
