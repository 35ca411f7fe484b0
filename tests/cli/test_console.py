"""flashdist's console filters: each known message dropped by flashdist's entry points, and only there;
flashdist's own warnings printed once in a real ``flashdist fit``."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from flashdist.cli.console import FILTERS, quiet_console
from tests.cli.cli_runs import SHORT, config_copy, finish, flashdist_fit, read_summary


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
        with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
            rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
            rank_zero_info("GPU available: False, used: False")
    tip_logger.filters[:] = filters_before
    assert [str(w.message) for w in caught] == ["a real warning"]
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
    stdout, stderr = finish(flashdist_fit(config, *SHORT, "--trainer.enable_progress_bar=false", env={"PYTHONWARNINGS": "always"}))
    assert (stdout + stderr).count("Lightning Flash stepped it once per optimizer step") == 1
    assert read_summary(tmp_path)["optimizer_steps"] == 4
