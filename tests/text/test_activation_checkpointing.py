"""CausalLM(activation_checkpointing=True): the same loss and gradients as without, full and LoRA, one process.

The 2-process run under FSDP2 (per-block sharding with per-block checkpointing) is in
test_lm_strategies.py; here the arithmetic is compared on one process, in-process.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import pytest
import torch

from flashdist import ConfigError
from flashdist.text import CausalLM

LORA = {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}


@contextlib.contextmanager
def _console_stays_quiet():
    """Nothing shown beyond flashdist's console filters (compat/console.py: peft's read of a deprecated transformers attribute)."""
    from flashdist.compat.console import quiet_console

    quiet_console(dict(os.environ))  # an environ installs again: pytest restores the filters after each test
    with warnings.catch_warnings(record=True) as shown:
        yield
    assert [str(w.message) for w in shown] == []


def _loss_and_grads(lm: CausalLM, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    lm.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # LoRA dropout draws: the recompute must replay the same ones
    loss = lm(batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in lm.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_checkpointed_blocks_give_the_same_loss_and_gradients(lora):
    torch.manual_seed(0)
    plain = CausalLM(backbone="tiny-llama", lora=lora)
    with _console_stays_quiet():  # no deprecation chatter from our own use of transformers / peft
        torch.manual_seed(0)
        checkpointed = CausalLM(backbone="tiny-llama", lora=lora, activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    base = checkpointed.model.get_base_model() if lora else checkpointed.model
    layers = base.model.layers
    assert all(layer.gradient_checkpointing for layer in layers) and not any(l.gradient_checkpointing for l in plain.model.modules() if hasattr(l, "gradient_checkpointing"))

    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(4, 200, (4, 24), generator=generator)
    labels = ids.clone()
    labels[:, :7] = -100
    batch = {"input_ids": ids, "labels": labels}

    calls = []
    handle = layers[0].self_attn.register_forward_pre_hook(lambda *args: calls.append(1))  # inside the block: runs again in the recompute
    with _console_stays_quiet():
        got_loss, got_grads = _loss_and_grads(checkpointed, batch)
    handle.remove()
    assert len(calls) == 2  # the block ran again in the backward: it was recomputed, not stored

    want_loss, want_grads = _loss_and_grads(plain, batch)
    torch.testing.assert_close(got_loss, want_loss, atol=1e-6, rtol=0)
    assert got_grads.keys() == want_grads.keys() and got_grads
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-6, rtol=0, msg=name)


def test_activation_checkpointing_must_be_a_boolean():
    with pytest.raises(ConfigError, match=r"activation_checkpointing='yes' must be true or false"):
        CausalLM(backbone="tiny-llama", activation_checkpointing="yes")
