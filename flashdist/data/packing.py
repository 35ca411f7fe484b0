"""Packed and padded rows, as pure functions of the tokenized documents.

Packed rows carry ``position_ids`` that restart at 0 at every document start (and at the start
of every row: a document cut at a row boundary goes on in the next row as a new piece). Called
without ``attention_mask``, transformers turns those positions into a block-diagonal causal
mask (eager, SDPA, flex), so no token attends to another document. The label of every
position 0 is ``-100``: it would be predicted from the previous document's last token. So in
every row, packed or padded, ``labels != -100`` counts exactly the tokens that have a loss.

``flatten_for_flash`` turns a packed batch into the one-row form with ``cu_seq_lens_*`` that
flash-attention's varlen kernel reads, as transformers' ``DataCollatorWithFlattening`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE = -100


def pack_rows(input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], seq_length: int) -> dict[str, list[list[int]]]:
    """Documents concatenated in order and cut into rows of exactly ``seq_length`` tokens; the remainder is dropped.

    Rows in which nothing is learned are left out.

    Example:
        >>> pack_rows([[5, 6, 7], [8, 9]], [[5, 6, 7], [8, 9]], 4)["position_ids"]
        [[0, 1, 2, 0]]
    """
    ids = [token for doc in input_ids for token in doc]
    learned = [label for doc in labels for label in doc]
    positions = [position for doc in input_ids for position in range(len(doc))]
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for start in range(0, len(ids) - seq_length + 1, seq_length):
        row_positions = restart_at_row_start(positions[start:start + seq_length])
        row_labels = [IGNORE if p == 0 else label for p, label in zip(row_positions, learned[start:start + seq_length])]
        if all(label == IGNORE for label in row_labels):
            continue
        out["input_ids"].append(ids[start:start + seq_length])
        out["labels"].append(row_labels)
        out["position_ids"].append(row_positions)
    return out


def restart_at_row_start(positions: list[int]) -> list[int]:
    """A document piece that opens the row (cut off from its start) counts from 0 too."""
    first = positions[0] if positions else 0
    if first == 0:
        return positions
    out = list(positions)
    for i, position in enumerate(positions):
        if position == 0:
            break
        out[i] = position - first
    return out


def pad_row(input_ids: Sequence[int], labels: Sequence[int], seq_length: int, pad_id: int) -> dict[str, list[int]] | None:
    """One document cut on the right to ``seq_length`` and padded; None if nothing in it is learned.

    Example:
        >>> pad_row([5, 6, 7], [-100, 6, 7], 4, pad_id=0)
        {'input_ids': [5, 6, 7, 0], 'labels': [-100, 6, 7, -100], 'attention_mask': [1, 1, 1, 0]}
    """
    ids = list(input_ids[:seq_length])
    row_labels = [IGNORE, *labels[1:seq_length]] if ids else []
    if all(label == IGNORE for label in row_labels):
        return None
    fill = seq_length - len(ids)
    return {"input_ids": ids + [pad_id] * fill, "labels": row_labels + [IGNORE] * fill, "attention_mask": [1] * len(ids) + [0] * fill}


def flatten_for_flash(batch: dict[str, Any]) -> dict[str, Any]:
    """A packed batch ``[B, L]`` as one row ``[1, B·L]`` with flash-attention's varlen arguments.

    Every row starts at position 0, so row boundaries are document boundaries and the loss of
    the flattened row is the loss of the batch. The keys are the ones
    ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)`` gives.
    """
    import torch

    position_ids = batch["position_ids"].reshape(1, -1)
    starts = (position_ids[0] == 0).nonzero().view(-1).to(torch.int32)
    cu_seq_lens = torch.cat([starts, torch.tensor([position_ids.shape[1]], dtype=torch.int32)])
    longest = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
    return {"input_ids": batch["input_ids"].reshape(1, -1), "labels": batch["labels"].reshape(1, -1), "position_ids": position_ids,
            "cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens, "max_length_q": longest, "max_length_k": longest}


def collate_for_flash(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from torch.utils.data import default_collate

    return flatten_for_flash(default_collate(rows))


__all__ = ["collate_for_flash", "flatten_for_flash", "pack_rows", "pad_row", "restart_at_row_start"]
