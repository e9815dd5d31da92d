"""Frozen linear weights stored in bf16 change nothing under bf16 autocast, and only they change dtype."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.peft_models import peft_model_with_active_lora
from utils.model import store_frozen_linears_in


def _loss_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_bit_identical_under_autocast(tiny_model_dir: Path) -> None:
    model = peft_model_with_active_lora(tiny_model_dir)
    ids = torch.randint(4, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(3))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    logits, grads = _loss_and_grads(model, batch)

    converted = store_frozen_linears_in(model, torch.bfloat16)

    layers = model.config.num_hidden_layers
    assert converted == 7 * layers  # q, k, v, o, gate, up, down of every layer (q and v: their base layers)
    new_logits, new_grads = _loss_and_grads(model, batch)
    assert torch.equal(new_logits, logits)
    assert len(new_grads) == len(grads) == 4 * layers
    for new, old in zip(new_grads, grads, strict=True):
        assert torch.equal(new, old)


def test_only_frozen_base_linears_change(tiny_model_dir: Path) -> None:
    model = peft_model_with_active_lora(tiny_model_dir)
    model.add_adapter("ref", model.peft_config["default"])  # a frozen adapter, as DPO's reference
    store_frozen_linears_in(model, torch.bfloat16)
    attention = model.get_base_model().model.layers[0].self_attn
    assert attention.k_proj.weight.dtype == torch.bfloat16
    assert attention.q_proj.base_layer.weight.dtype == torch.bfloat16
    assert attention.q_proj.lora_A["default"].weight.dtype == torch.float32
    assert attention.q_proj.lora_A["ref"].weight.dtype == torch.float32
    assert not attention.q_proj.lora_A["ref"].weight.requires_grad
    assert model.get_output_embeddings().weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert store_frozen_linears_in(model, torch.bfloat16) == 0  # nothing left to convert
