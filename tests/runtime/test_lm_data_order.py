"""Exactly once after a ``kill -9`` of a one-process language-model fine-tune: the uninterrupted run's rows,
order, losses and weights, bitwise.

One recording script (fit_lm_order.py: every trained micro-batch's rows and loss, the final
weights) and one launch: it imports once and forks a child per fit, so each killed fit is a real
process killed with ``SIGKILL`` by itself in the middle of an epoch, and its resume
(``ckpt_path="auto"``) a new process that starts from what is on disk. The test waits on the
launch's end (each child's end is recorded by the parent), never on time.

A tiny Llama with attention dropout 0.1 (the step draws from the global RNG), a WordLevel
tokenizer and 120 prompt/completion pairs, all made here; ``LanguageModelingDataModule``
shuffles (``shuffle=True``, ``drop_last=True``), seq_length 32, one thread. Cases:

- packed (36 rows, batch 4, ``accumulate_grad_batches=2``: 9 micro-batches and 5 steps an
  epoch, 2 epochs), a checkpoint every 3 steps, killed after micro-batch 14 (epoch 1, the first
  half of step 8's window), resumed from step 6 (micro-batch 11);
- the same with ``num_workers=2``, killed after micro-batch 12, resumed from step 6; its reference
  is the packed run without workers (workers change nothing in the order);
- padded (120 rows, batch 8: 15 steps an epoch, 2 epochs), a checkpoint every 4 steps, killed
  after micro-batch 22, resumed from step 20;
- the packed rows as an ``IterableDataset`` with ``state_dict`` (no length) through torchdata's
  ``StatefulDataLoader``, ``accumulate_grad_batches=2`` (the token-weighted loss reads each
  window's second batch ahead), 10 steps, a checkpoint every 3, killed after micro-batch 13 (mid
  window), resumed from step 6 (micro-batch 12). Lightning checkpoints the loader's state; before
  flashdist's fixes the resume never loaded it (the stream started over) and, once loaded, it was
  a batch ahead (one batch never trained); the same with ``num_workers=2`` (each worker reads
  every second row; its own reference);
- the same stream without ``state_dict`` through a plain ``DataLoader``: the resume says, in an
  ``UnresumableEpochWarning``, that the stream starts over and its first 12 batches are trained
  again, and does exactly that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.runtime import harness
from tests.text.lm_fixtures import local_backbone

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "fit_lm_order.py"
PACKED = {"packing": True, "batch_size": 4, "accumulate_grad_batches": 2, "max_epochs": 2, "checkpoint_every_n_steps": 3}
PADDED = {"packing": False, "batch_size": 8, "max_epochs": 2, "checkpoint_every_n_steps": 4}
STREAM = {"packing": True, "batch_size": 4, "accumulate_grad_batches": 2, "max_steps": 10, "checkpoint_every_n_steps": 3}
CASES = {  # name: (config, reference, kill after this micro-batch, micro-batches in the checkpoint "auto" finds)
    "packed": (PACKED, "packed", 14, 11),
    "packed_2_workers": ({**PACKED, "num_workers": 2}, "packed", 12, 11),
    "padded": (PADDED, "padded", 22, 20),
    "stateful_stream": ({**STREAM, "stream": {"num_workers": 0}}, "stream", 13, 12),
    "stateful_stream_2_workers": ({**STREAM, "stream": {"num_workers": 2}}, "stream_2_workers", 13, 12),
}
REFERENCES = {"packed": PACKED, "padded": PADDED, "stream": {**STREAM, "stream": {"num_workers": 0}},
              "stream_2_workers": {**STREAM, "stream": {"num_workers": 2}}}
WITHOUT_STATE = ({**STREAM, "stream_without_state": True}, 13, 12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("lm-order")
    model_dir, data_file = local_backbone(w, count=120)
    config_file = model_dir / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "attention_dropout": 0.1}))
    common = {"model_dir": str(model_dir), "data_file": str(data_file)}

    def fit(name: str, config: dict, **more) -> dict:
        cache = "packed" if config["packing"] else "padded"
        return {**common, **config, "cache_dir": str(w / f"cache-{cache}"), "root": str(w / name), **more}

    fits = [fit(f"ref-{name}", config) for name, config in REFERENCES.items()]
    fits.append(fit("ref-packed-again", PACKED))
    killed = [(f"killed-{name}", config, kill) for name, (config, _, kill, _) in CASES.items()]
    killed.append(("killed-without-state", WITHOUT_STATE[0], WITHOUT_STATE[1]))
    for name, config, kill in killed:  # killed in one child, resumed in the next
        fits += [fit(name, config, kill_after_micro_batches=kill), fit(name, config, attempt=1, ckpt_path="auto")]
    (w / "fits.json").write_text(json.dumps(fits))
    # Own session, so a timeout takes the forked fits down too instead of orphaning them (as harness.forked).
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(w / "fits.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=harness._env(), cwd=harness.REPO, start_new_session=True)
    try:
        output = proc.communicate(timeout=600)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"fit_lm_order.py still running after 600 s:\n{proc.communicate()[0][-6000:]}") from None
    (w / "log.txt").write_text(output)
    assert proc.returncode == 0, output[-6000:]
    return w


def _micro_batches(root: Path) -> list[dict]:
    assert not (root / "error.txt").exists(), (root / "error.txt").read_text()[-4000:]
    return [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines()]


def _ends(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "ends.jsonl").read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = torch.load(a / "weights.pt"), torch.load(b / "weights.pt")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _trained(records: list[dict]) -> list[tuple[int, list[str], float]]:
    return [(r["epoch"], r["rows"], r["loss"]) for r in records]


def test_the_references_are_bitwise_reproducible_and_each_epoch_reads_every_row_once(runs):
    a, b = _micro_batches(runs / "ref-packed"), _micro_batches(runs / "ref-packed-again")
    assert _trained(a) == _trained(b) and _same_weights(runs / "ref-packed", runs / "ref-packed-again")
    # packed: 37 distinct rows, 36 read per epoch (drop_last), each once; padded: 120 rows (61 distinct texts), all read
    for name, rows, per_epoch in (("packed", 37, 36), ("padded", 61, 120)):
        records = _micro_batches(runs / f"ref-{name}")
        epochs = [[row for r in records if r["epoch"] == epoch for row in r["rows"]] for epoch in (0, 1)]
        assert len(epochs[0]) == len(epochs[1]) == per_epoch and len(set(epochs[0]) | set(epochs[1])) == rows
        assert epochs[0] != epochs[1]  # shuffled anew
        if name == "packed":
            assert len(set(epochs[0])) == len(set(epochs[1])) == per_epoch  # no row twice in an epoch
        else:
            assert Counter(epochs[0]) == Counter(epochs[1])  # every row, each epoch
    packed_rows = {row for r in a for row in r["rows"]}
    for name in ("stream", "stream_2_workers"):
        stream = _micro_batches(runs / f"ref-{name}")
        assert len(stream) == 20 and {row for r in stream for row in r["rows"]} <= packed_rows


@pytest.mark.parametrize("case", CASES)
def test_a_kill_mid_epoch_resumes_with_the_uninterrupted_rows_losses_and_weights(runs, case):
    _, reference_name, kill, done = CASES[case]
    root = runs / f"killed-{case}"
    assert _ends(root) == [{"attempt": 0, "signal": 9, "code": None}, {"attempt": 1, "signal": None, "code": 0}]
    reference = _micro_batches(runs / f"ref-{reference_name}")
    records = _micro_batches(root)
    before = [r for r in records if r["attempt"] == 0]
    after = [r for r in records if r["attempt"] == 1]
    assert len(before) == kill, "killed where the case says"
    assert len(reference) - len(after) == done, "resumed from the last checkpoint before the kill"
    assert _trained(before) == _trained(reference[:kill])
    assert _trained(after) == _trained(reference[done:])  # the rest: same rows, order and losses, bitwise
    assert _same_weights(root, runs / f"ref-{reference_name}")
    summary = harness.summary(root)
    assert summary["completed"] and summary["resumed_from"].endswith(".ckpt")


def test_a_stream_without_state_says_it_starts_over_and_does(runs):
    _, kill, done = WITHOUT_STATE
    root = runs / "killed-without-state"
    reference = _micro_batches(runs / "ref-stream")
    after = [r for r in _micro_batches(root) if r["attempt"] == 1]
    assert [r["rows"] for r in after] == [r["rows"] for r in reference[: len(reference) - done]]  # from its start again
    expected = (
        f"UnresumableEpochWarning: resuming {done} batch(es) into epoch 0 of a training loader whose position flashdist "
        f"cannot restore (RowStreamWithoutState without a sampler it can split): the loader starts the epoch over, so its "
        f"first {done} batch(es) per rank are trained again, and the epoch ends when the loader is exhausted (or at max_steps)."
    )
    assert expected in " ".join((runs / "log.txt").read_text().split())
