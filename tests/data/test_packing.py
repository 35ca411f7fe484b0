"""Packed rows keep documents apart: the arithmetic of rows as tables, and the loss of every
document inside a packed row equal to its loss alone on a tiny Llama (eager and SDPA)."""

from __future__ import annotations

import pytest
import torch

from flashdist.data.packing import flatten_for_flash, pack_rows, pad_row

X = -100


@pytest.mark.parametrize(
    ("docs", "learned", "seq_length", "rows"),
    [
        pytest.param([[5, 6, 7], [8, 9]], None, 4, [([5, 6, 7, 8], [X, 6, 7, X], [0, 1, 2, 0])], id="remainder-dropped"),
        pytest.param([[5, 6, 7], [8, 9], [1, 2, 3]], None, 4,
                     [([5, 6, 7, 8], [X, 6, 7, X], [0, 1, 2, 0]), ([9, 1, 2, 3], [X, X, 2, 3], [0, 0, 1, 2])], id="cut-piece-restarts"),
        pytest.param([[1, 2, 3, 4, 5, 6, 7, 8, 9]], None, 3,
                     [([1, 2, 3], [X, 2, 3], [0, 1, 2]), ([4, 5, 6], [X, 5, 6], [0, 1, 2]), ([7, 8, 9], [X, 8, 9], [0, 1, 2])],
                     id="long-document-in-pieces"),
        pytest.param([[5, 6, 7, 8], [1, 2, 3, 4]], [[X, X, X, X], [X, 2, X, 4]], 4, [([1, 2, 3, 4], [X, 2, X, 4], [0, 1, 2, 3])],
                     id="row-with-nothing-learned-left-out"),
    ],
)
def test_pack_rows(docs, learned, seq_length, rows):
    out = pack_rows(docs, learned or docs, seq_length)
    assert list(zip(out["input_ids"], out["labels"], out["position_ids"])) == rows


@pytest.mark.parametrize(
    ("ids", "labels", "row"),
    [
        ([5, 6, 7], [5, 6, 7], {"input_ids": [5, 6, 7, 0], "labels": [X, 6, 7, X], "attention_mask": [1, 1, 1, 0]}),
        ([1, 2, 3, 4, 5, 6], [X, X, 3, 4, 5, 6], {"input_ids": [1, 2, 3, 4], "labels": [X, X, 3, 4], "attention_mask": [1, 1, 1, 1]}),
        ([1, 2, 3, 4, 5, 6], [X, X, X, X, 5, 6], None),  # truncated on the right: its learned part is gone
    ],
    ids=["padded", "truncated-on-the-right", "nothing-left-to-learn"],
)
def test_pad_row(ids, labels, row):
    assert pad_row(ids, labels, 4, pad_id=0) == row


def test_flattened_batch_matches_transformers_data_collator_with_flattening():
    from transformers import DataCollatorWithFlattening

    packed = pack_rows([[5, 6, 7], [8, 9], [1, 2, 3]], [[5, 6, 7], [8, 9], [1, 2, 3]], 4)
    ours = flatten_for_flash({key: torch.tensor(value) for key, value in packed.items()})
    pieces = [[5, 6, 7], [8], [9], [1, 2, 3]]  # the documents as the rows cut them
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=True)([{"input_ids": p} for p in pieces])
    for key in ("input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k"):
        assert ours[key].tolist() == theirs[key].tolist(), key
    assert ours["max_length_q"] == ours["max_length_k"] == theirs["max_length_q"] == 3


def _tiny_llama(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, attn_implementation=attn)
    return LlamaForCausalLM(config).eval()  # use_cache=False below, as CausalLM.forward calls it


def _loss_per_document(logits, labels, position_ids):
    """Mean next-token loss of each document of one row, documents split where positions restart."""
    losses = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=X, reduction="none")
    starts = [int(i) for i in (position_ids[0] == 0).nonzero().view(-1)] + [labels.shape[1]]
    out = []
    for start, end in zip(starts, starts[1:]):
        target = labels[0, start + 1:end] != X  # a target at index t is predicted from position t - 1
        out.append(losses[start:end - 1][target].mean())
    return torch.stack(out)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_every_documents_loss_in_a_packed_row_equals_its_loss_alone(attn):
    model = _tiny_llama(attn)
    generator = torch.Generator().manual_seed(1)
    docs = [torch.randint(1, 50, (n,), generator=generator).tolist() for n in (7, 5, 9, 3)]
    labels = [[X, X] + d[2:] for d in docs]  # the first two tokens of each document are a "prompt"
    packed = pack_rows(docs, labels, 24)
    batch = {key: torch.tensor(value) for key, value in packed.items()}
    assert batch["position_ids"].tolist() == [[*range(7), *range(5), *range(9), *range(3)]]
    with torch.no_grad():
        together = _loss_per_document(model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits,
                                      batch["labels"], batch["position_ids"])
        alone = torch.stack([torch.nn.functional.cross_entropy(model(input_ids=torch.tensor([d])).logits[0, 1:-1],
                                                               torch.tensor(d[2:])) for d in docs])
        # The model's own loss (the one training uses) is the token-weighted mean of the documents'.
        own = model(**batch, use_cache=False).loss
        flat = model(**flatten_for_flash(batch), use_cache=False).loss  # the flash-attention batch form, run by this attention
        # What the position reset protects against: an all-ones mask lets documents see each other.
        leaky = _loss_per_document(model(**batch, attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits,
                                   batch["labels"], batch["position_ids"])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    weights = torch.tensor([len(d) - 2 for d in docs], dtype=torch.float)
    torch.testing.assert_close(own, (alone * weights).sum() / weights.sum(), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat, own, atol=1e-6, rtol=0)
    assert (leaky[1:] - alone[1:]).abs().min() > 1e-3


def _flash_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return torch.cuda.is_available() and is_flash_attn_2_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _flash_available(), reason="needs a CUDA device with flash-attn installed")
def test_on_cuda_flash_attention_varlen_keeps_packed_documents_apart_as_sdpa_does():
    generator = torch.Generator().manual_seed(2)
    docs = [torch.randint(1, 50, (n,), generator=generator).tolist() for n in (7, 5, 9, 3, 8)]
    packed = pack_rows(docs, docs, 16)  # two rows of 16; the third document is cut at the row boundary
    batch = {key: torch.tensor(value) for key, value in packed.items()}
    flat = {key: value.cuda() if torch.is_tensor(value) else value for key, value in flatten_for_flash(batch).items()}
    per_attention = {}
    for attn in ("flash_attention_2", "sdpa"):
        model = _tiny_llama(attn).to("cuda", torch.bfloat16)
        with torch.no_grad():
            if attn == "sdpa":
                logits = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits
            else:
                logits = model(**{k: v for k, v in flat.items() if k != "labels"}, use_cache=False).logits
            pieces = torch.tensor_split(flat["input_ids"][0], flat["cu_seq_lens_q"][1:-1].long().cpu())
            alone = torch.cat([model(input_ids=piece[None], use_cache=False).logits[0] for piece in pieces])
        torch.testing.assert_close(logits[0].float(), alone.float(), atol=2e-2, rtol=0)  # bf16
        per_attention[attn] = logits[0].float()
    torch.testing.assert_close(per_attention["flash_attention_2"], per_attention["sdpa"], atol=2e-2, rtol=0)
