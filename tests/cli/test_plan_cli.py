"""`flashdist plan` as a user types it: the scheduler forms a config reads, one warmup, a readable plot.

1000 samples, batch 8, 1 rank, 2 epochs: 125 micro-batches and 125 optimizer steps per epoch,
250 in total; a warmup of 0.1 is 25 steps, 0.05 is 12.5, rounded up to 13.
"""

from __future__ import annotations

import pytest

from flashdist.cli import plan

RUN = ["--dataset-size", "1000", "--batch-size", "8", "--max-epochs", "2"]


def warmup_printed(out: str) -> int:
    (line,) = [line for line in out.splitlines() if line.startswith("warmup steps")]
    return int(line.split()[-1])


@pytest.mark.parametrize("spec", ["[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]",  # YAML flow, as in a config
                                  '["cosine_schedule_with_warmup", {"num_warmup_steps": 0.1}]',  # JSON
                                  " (cosine_schedule_with_warmup, {num_warmup_steps: 0.1}) "],
                         ids=["yaml-flow", "json", "parentheses"])
def test_lr_scheduler_reads_the_forms_a_config_reads_and_its_warmup_is_the_plans(spec, capsys):
    assert plan.run([*RUN, "--lr-scheduler", spec]) == 0
    assert warmup_printed(capsys.readouterr().out) == 25


def test_malformed_lr_scheduler_is_a_config_error_not_a_traceback(capsys):
    assert plan.run([*RUN, "--lr-scheduler", "[cosine_schedule_with_warmup, {num_warmup_steps: 0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr-scheduler '[cosine_schedule_with_warmup, {num_warmup_steps: 0.1' is not valid YAML/JSON" in err
    assert "HINT:" in err and "Traceback" not in err and "JSONDecodeError" not in err


def test_a_schedulers_own_warmup_and_warmup_flag_together_are_refused(tmp_path, capsys):
    png = tmp_path / "x.png"
    code = plan.run([*RUN, "--plot", str(png), "--lr-scheduler", "[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]", "--warmup", "0.05"])
    err = capsys.readouterr().err
    assert code == 2 and "--warmup=0.05 and the scheduler's own num_warmup_steps=0.1 both give the warmup" in err and "HINT:" in err
    assert not png.exists()


@pytest.mark.parametrize("flags", [["--lr-scheduler", "[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]"],
                                   ["--lr-scheduler", "cosine_schedule_with_warmup", "--warmup", "0.05"]],
                         ids=["scheduler's own", "--warmup"])
def test_the_plot_peaks_where_the_printout_says_and_its_label_is_not_clipped(flags, tmp_path, capsys):
    png = tmp_path / "lr.png"
    assert plan.run([*RUN, *flags, "--learning-rate", "0.0003", "--plot", str(png)]) == 0
    warmup = warmup_printed(capsys.readouterr().out)
    assert warmup == (25 if "--warmup" not in flags else 13)
    settings = plan._settings(plan.build_parser().parse_args([*RUN, *flags, "--learning-rate", "0.0003"]))
    _, rows = plan.planned_lr_rows(plan.plan_report(**settings), settings)  # what the plot draws
    lrs = [row[0] for row in rows]
    assert lrs.index(max(lrs)) == warmup and max(lrs) == pytest.approx(0.0003)  # step `warmup` is the first at the peak
    # The y-axis label is inside the image (0.00030-wide tick labels pushed it off the left edge before).
    from matplotlib.image import imread

    image = imread(png)
    assert image[:, :3, :3].min() > 0.99, "something is drawn at the image's left edge: the y label is clipped"
