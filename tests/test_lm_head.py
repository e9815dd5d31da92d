"""The label-only LM head gives every field and gradient TRL's fused head gives, at labelled positions."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from federated_learning.lm_head import METRIC_FIELDS, label_only_log_probs, use_label_only_head
from tests.peft_models import peft_model_with_active_lora


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab, (3, 12), generator=generator)
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[2, :] = -100  # a row without any label
    labels[1, 9:] = -100  # padding at the end
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _run(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[object, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


def test_fields_and_gradients_match_trl(tiny_model_dir: Path) -> None:
    model = peft_model_with_active_lora(tiny_model_dir)
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", *METRIC_FIELDS))
    batch = _batch(model.config.vocab_size)
    reference, reference_grads = _run(model, batch)

    assert use_label_only_head(model, METRIC_FIELDS)
    ours, grads = _run(model, batch)

    assert torch.equal(ours.label_mask, reference.label_mask)
    torch.testing.assert_close(ours.loss, reference.loss, rtol=1e-5, atol=1e-6)
    for field in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits"):
        torch.testing.assert_close(getattr(ours, field), getattr(reference, field), rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.is_top1, reference.is_top1)
    assert ours.log_probs[2].abs().sum() == 0  # no label: zero, as TRL's head gives
    assert grads.keys() == reference_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6)


def test_unrequested_fields_are_zeros_and_plain_forward_unchanged(tiny_model_dir: Path) -> None:
    model = peft_model_with_active_lora(tiny_model_dir)
    batch = _batch(model.config.vocab_size)
    plain = model(**batch).loss
    signature = inspect.signature(model.get_base_model().forward)
    assert use_label_only_head(model, ("is_top1",))
    # generate() reads the original signature (logits_to_keep) and the ordinary forward is untouched.
    assert inspect.signature(model.get_base_model().forward) == signature
    torch.testing.assert_close(model(**batch).loss, plain)
    out = model(**batch, fused_lm_head=True)
    # Fields not asked for are zeros (a trainer's metric code reads them on every step).
    assert not out.entropy.any() and not out.mean_logits.any() and not out.log_sum_sq_probs.any()
    assert out.is_top1.dtype == torch.bool and out.is_top1.shape == out.log_probs.shape
    torch.testing.assert_close(out.loss, plain, rtol=1e-5, atol=1e-6)  # mean NLL over labels = HF's loss
    top1 = model(**batch).logits[:, :-1].argmax(-1) == batch["labels"][:, 1:]
    assert torch.equal(out.is_top1, top1 & out.label_mask)


def test_chunked_equals_unchunked_with_gradients() -> None:
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(37, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=generator)
    whole = label_only_log_probs(hidden, weight, None, targets, ("entropy",))
    grads = torch.autograd.grad(whole[0].sum(), (hidden, weight))
    chunked = label_only_log_probs(hidden, weight, None, targets, ("entropy",), logits_per_chunk=50 * 8)
    chunked_grads = torch.autograd.grad(chunked[0].sum(), (hidden, weight))
    for a, b in zip((*whole, *grads), (*chunked, *chunked_grads), strict=True):
        torch.testing.assert_close(a, b)
    expected = torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(whole[0], expected)


def test_rescaled_logits_keep_trl_head(tiny_model_dir: Path) -> None:
    model = peft_model_with_active_lora(tiny_model_dir)
    model.get_base_model().config.final_logit_softcapping = 30.0
    assert not use_label_only_head(model)
    with pytest.raises(ValueError, match="unknown fused-head fields"):
        use_label_only_head(model, ("logits",))


def test_lora_on_lm_head_is_in_the_loss_and_trains(tiny_model_dir: Path) -> None:
    """--peft_target_modules q_proj,v_proj,lm_head: the fused loss is the model's own; lm_head's LoRA trains."""
    from transformers import AutoModelForCausalLM

    from utils.model import add_lora_adapter

    torch.manual_seed(0)
    model = add_lora_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), r=4, alpha=8, dropout=0.0,
                             modules="q_proj,v_proj,lm_head")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter: the head's LoRA term changes the logits
    batch = _batch(model.config.vocab_size)
    plain = model(**batch).loss  # the model's own forward: logits through the adapted lm_head
    with torch.no_grad(), model.disable_adapter():
        without_adapters = model(**batch).loss
    assert use_label_only_head(model)
    model.zero_grad(set_to_none=True)
    fused = model(**batch, fused_lm_head=True).loss
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    assert abs(float(fused) - float(without_adapters)) > 1e-3
    fused.backward()
    head_grads = [p.grad for n, p in model.named_parameters() if "lm_head" in n and "lora_" in n]
    assert head_grads and all(g is not None and g.abs().sum() > 0 for g in head_grads)
