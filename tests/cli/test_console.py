"""flashdist's console filters: each known message dropped by flashdist's entry points, and only there;
flashdist's own warnings printed once in a real ``flashdist fit``."""

from __future__ import annotations

import csv
import logging
import os
import pty
import re
import subprocess
import sys
import warnings

import pytest

from flashdist.compat.console import FILTERS, quiet_console
from tests.cli.cli_runs import REPO, SHORT, config_copy, finish, flashdist_fit, read_summary
from tests.fitting import free_port

# What a fit's console must not carry: the dependencies' notes about flashdist's own use of them.
NOISE = ("Warning", "deprecated", "Setting accelerator", "built successfully", "Tip:", "it/s]", "examples/s]")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_importing_flashdist_installs_no_filter():
    # A user's own program keeps every warning and log line: only flashdist's commands filter.
    probe = "import warnings, flashdist, flashdist.runtime.trainer; print(any('srun' in str(f[1]) or 'LeafSpec' in str(f[1]) for f in warnings.filters))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout.split()[-1] == "False"


def test_the_srun_hint_stays_inside_a_slurm_job():
    assert "srun hint outside a SLURM job" in [f.name for f in FILTERS]
    srun = next(f for f in FILTERS if f.name == "srun hint outside a SLURM job")
    assert srun.applies({}) and not srun.applies({"SLURM_JOB_ID": "42"})


def test_each_filter_drops_its_message_and_nothing_else(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    tip_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    filters_before = list(tip_logger.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_console({})
        warnings.warn("The `srun` command is available on your system but is not used. HINT: ...", UserWarning)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("a real warning", UserWarning)
        hint = ("It is recommended to use `self.log({!r}, ..., sync_dist=True)` when logging on epoch level in distributed"
                " setting to accumulate the metric across devices.")
        warnings.warn(hint.format("val_loss"), UserWarning)  # CausalLM reduced it over the ranks itself
        warnings.warn(hint.format("val_acc"), UserWarning)  # a user's own metric: the hint is theirs
        with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
            rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
            rank_zero_info("GPU available: False, used: False")
    tip_logger.filters[:] = filters_before
    assert [str(w.message) for w in caught] == ["a real warning", hint.format("val_acc")]
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_the_interval_note_prints_once_in_a_real_flashdist_fit(tmp_path):
    # StepLR without an interval: the CLI's pre-launch check and the Task's construction both read
    # the spec; only the Task warns. PYTHONWARNINGS=always makes Python print every warn() call, so
    # the count is the calls made, not what its once-per-place memory (reset by any library's
    # filterwarnings in between) happens to hide; rank 1 must not add its own.
    config = config_copy("quickstart.yaml", tmp_path, {
        "lr_scheduler: [cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]": "lr_scheduler: [steplr, {step_size: 1}]",
        "num_samples: 2048": "num_samples: 128",
    })
    stdout, stderr = finish(flashdist_fit(config, *SHORT, env={"PYTHONWARNINGS": "always"}))
    assert (stdout + stderr).count("Lightning Flash stepped it once per optimizer step") == 1
    assert read_summary(tmp_path)["optimizer_steps"] == 4
    # Not a terminal: the same shape as on one (the progress bar's last frame before the table).
    assert_console_shape(stdout, tmp_path / "run")


def assert_console_shape(stdout: str, root) -> None:
    """The plan once, the progress bar closed before the run table, aligned rows without trailing spaces, each fact once."""
    lines = stdout.splitlines()
    assert lines.count("flashdist plan") == 1 and lines.count("flashdist run") == 1, stdout
    table = lines[lines.index("flashdist run") + 1:]
    rows = {line.split("  ")[0]: line.split("  ")[-1].strip() for line in table if "  " in line}
    assert "Epoch" not in "\n".join(table), stdout  # no progress frame drawn after (or over) the table
    assert not [line for line in lines[lines.index("flashdist plan"):] if line.startswith(("flashdist", "optimizer ", "lr ")) and line != line.rstrip()], stdout
    assert not [line for line in table if line != line.rstrip()], stdout
    assert sum(line.startswith("optimizer ") and "lr=" in line for line in lines) == 1, stdout  # the choice is said once
    with open(root / "lr.csv") as handle:
        last_lr = float(list(csv.reader(handle))[-1][1])
    assert float(rows["lr first / peak / final"].split(" / ")[-1]) == pytest.approx(last_lr, rel=1e-3)


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_a_lora_deepspeed_fit_on_a_terminal_shows_only_the_users_business(tmp_path):
    # The noisiest fit (DeepSpeed ZeRO-2 on CPU, LoRA, tokenization, export) under a pseudo-terminal:
    # no dependency notes, one progress display at a time, and the table after the bar is closed.
    config = config_copy("llm_finetune.yaml", tmp_path)
    command = [sys.executable, "-m", "flashdist.cli.main", "fit", "--config", str(config), "--trainer.max_tokens=20480",
               "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", f"--data.init_args.cache_dir={tmp_path / 'cache'}",
               "--model.init_args.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "COLUMNS": "100"}
    env.pop("LOCAL_RANK", None)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every process holding the terminal is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=240) == 0, b"".join(chunks).decode(errors="replace")[-6000:]
    raw = b"".join(chunks).decode(errors="replace")
    tail = raw[raw.index("flashdist run"):]
    assert "Epoch" not in tail, raw[-3000:]  # the bar is not redrawn over or after the table
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    assert not [line for line in text.splitlines() if any(noise in line for noise in NOISE)], text
    assert text.count("flashdist: tokenized ") == 1 and "exported the trained model" in text, text
    assert re.search(r"v_num: \d+ ", text) and "v_num: 0.000" not in text, text  # the run's version, an integer
    assert_console_shape("\n".join(line.split("\r")[-1] for line in text.splitlines()), tmp_path / "run")  # what a terminal shows


@pytest.mark.parametrize("name, source", [("torch all_gather_into_tensor deprecation", "torch.distributed.distributed_c10d"),
                                          ("transformers is_gradient_checkpointing deprecation", "transformers.modeling_utils")])
def test_each_dependency_deprecation_filter_names_a_warning_still_raised_upstream(name, source):
    # When the dependency stops raising it (or rewords it), the filter is dead: this fails, drop it.
    import importlib
    import inspect

    entry = next(f for f in FILTERS if f.name == name)
    assert re.search(entry.pattern, inspect.getsource(importlib.import_module(source))), entry
