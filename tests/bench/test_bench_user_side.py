"""`flashdist bench` as a user runs it: from their own folder, not the repo.

The default outputs land under the working directory's ``bench-results/``, never in a
``./flashdist/`` folder that would shadow the installed package; ``--import`` finds the
user's module in the working directory; ``--only`` refuses a typo; every spec form has its
name in the tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from flashdist.cli.main import main

TINY = ["--groups", "1", "--steps", "5", "--repeats", "1", "--warmup-steps", "1"]


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """An empty folder that is not the repo, as the working directory."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_default_chart_goes_to_bench_results_and_import_flashdist_still_works(user_folder, capsys):
    assert main(["bench", "schedulers", *TINY, "--only", "steplr"]) == 0
    assert "plot: bench-results/schedulers.png" in capsys.readouterr().out
    assert (user_folder / "bench-results" / "schedulers.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in user_folder.iterdir()) == ["bench-results"]
    # The user's next `python train.py` here finds the real package, not a namespace package
    # (whose origin is None): find_spec resolves it as `import flashdist` would, without importing it.
    probe = "import importlib.util; print(importlib.util.find_spec('flashdist').origin)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, as a user has it
    found = subprocess.run([sys.executable, "-c", probe], cwd=user_folder, env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and found.stdout.strip().endswith("__init__.py"), (found.stdout, found.stderr[-2000:])


def test_out_folder_holds_the_default_chart(user_folder, capsys):
    assert main(["bench", "schedulers", *TINY, "--only", "steplr", "--out", "charts/today"]) == 0
    assert (user_folder / "charts" / "today" / "schedulers.png").is_file()
    assert not (user_folder / "bench-results").exists()


@pytest.mark.parametrize("what", ["fit", "compile", "llm", "startup"])
def test_no_other_bench_writes_into_a_package_path_by_default(what):
    from flashdist.cli import bench

    defaults = vars(bench.parser().parse_args([what]))
    written = [v for k, v in defaults.items() if k in ("plot", "json_path", "table_path") and v is not None]
    assert written == [] and defaults.get("out", "bench-results") == "bench-results"


def test_import_finds_a_module_in_the_working_directory(user_folder, capsys, monkeypatch):
    (user_folder / "my_recipes_cli_test.py").write_text(textwrap.dedent("""
        import torch
        from flashdist import Task

        class MyTask(Task):
            pass

        @MyTask.lr_schedulers
        def my_halving(optimizer):
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.5)
    """))
    # The `flashdist` script's sys.path starts at its bin folder, not the working directory.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(user_folder))])
    monkeypatch.delitem(sys.modules, "my_recipes_cli_test", raising=False)
    assert main(["bench", "schedulers", *TINY, "--import", "my_recipes_cli_test", "--only", "my_halving", "--plot", "none"]) == 0
    assert "my_halving" in capsys.readouterr().out


def test_only_refuses_an_unknown_name_with_close_matches(user_folder, capsys):
    code = main(["bench", "schedulers", *TINY, "--only", "linear_schedule_with_warmup,no_such_sched,cosine_schedul_with_warmup"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown scheduler(s) ['no_such_sched', 'cosine_schedul_with_warmup']" in err
    assert "did you mean 'cosine_schedule_with_warmup'" in err and "HINT:" in err
    assert list(user_folder.iterdir()) == []  # refused before any timing or writing


def test_every_spec_form_has_its_name_in_both_tables(user_folder, capsys):
    specs = ["[linear_schedule_with_warmup, {num_warmup_steps: 0.1}]", "(steplr, {step_size: 10})", "hf:linear_schedule_with_warmup",
             "tests.bench.user_schedules:warmup_then_inverse_sqrt"]
    argv = ["bench", "schedulers", *TINY, "--plot", "none"]
    for spec in specs:
        argv += ["--scheduler", spec]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    tables = printed.split("fast path ÷ direct assignment")
    assert len(tables) == 2, printed
    for spec in specs:
        assert spec in tables[0], f"{spec!r} not in the first table:\n{tables[0]}"
    # The fast path (flashdist's closed form) also in the second table, under the spec's own text.
    assert specs[0] in tables[1], tables[1]
