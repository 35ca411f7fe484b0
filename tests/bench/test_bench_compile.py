"""`flashdist bench compile` end to end on tiny sizes (dynamo's eager backend: the guards, not inductor): structure only."""

from __future__ import annotations

import json

from flashdist.cli.main import main


def test_cli_prints_ratios_and_recompile_counts(tmp_path, capsys):
    out_json = tmp_path / "compile.json"
    code = main(["bench", "compile", "--workloads", "mlp", "--steps", "3", "--repeats", "2", "--warmup-steps", "2",
                 "--float-steps", "3", "--backend", "eager", "--json", str(out_json)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "compiled ÷ eager" in printed and "float LR contrast" in printed and "method:" in printed
    result = json.loads(out_json.read_text())
    (row,) = result["results"]
    assert row["workload"] == "mlp" and row["parameters"] == 32 * 64 + 64 + 64 * 4 + 4
    low, high = row["ratio_ci95"]
    assert 0 < low <= row["ratio_compiled_to_eager"] <= high
    assert row["compiles_in_warmup"] > 0 and row["recompiles_while_timed"] == 0
    contrast = result["float_lr_contrast"]
    assert contrast["steps"] == 3 and len(contrast["frame_compiles_after_each_step"]) == 3
    assert contrast["frame_compiles"] > contrast["frame_compiles_after_each_step"][0], "the float LR recompiled"
