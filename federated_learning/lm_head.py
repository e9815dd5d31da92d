"""Next-token log-probabilities computed only where labels are, for TRL's fused-LM-head call.

TRL 1.16's SFTTrainer and DPOTrainer patch the model with ``trl.trainer.utils.add_fused_lm_head``
and call ``model(..., labels=labels, fused_lm_head=True)``, reading the per-token fields of a
``FusedCausalLMOutput`` (log-probabilities for the loss; entropy, top-1 and mean logit for their
metrics). TRL scores only the labelled positions where Triton runs (CUDA, XPU); elsewhere it scores
*every* position, folds fp32 [4096 x 32768] tiles with a dozen torch passes, and runs the gradient
matmuls in fp32. On the CPU of benchmarks/README.md, for the SmolLM2 head (vocabulary 49,152) at
batch 4 x 256 with labels on half of the tokens, forward + backward of the head took 4.6 s with TRL's
head, 1.1 s with plain full logits and 0.4 s with plain logits at the labelled positions only.

``use_label_only_head`` re-patches the same forward, after the trainer is built, with that last
form: the backbone runs as before, then the head projects only the hidden states whose next-token
label is not -100 (in the autocast dtype: AMX on CPU, tensor cores on GPU). ``log_probs`` (the
loss) and the metric fields asked for are computed from those logits exactly as TRL defines them;
the metric fields not asked for are zeros (TRL: None). The trainers read entropy and top-1 (DPO:
also the mean logit) on every step for per-step metrics that this project never logs
(``logging_strategy="no"``), and computing them cost 7-11% of a 4 x 256 SFT step; so the
trainers here ask for none, except what changes a loss (DPO's ``log_sum_sq_probs`` under WPO
weighting). The trainers are not subclassed and their loss code is untouched;
``tests/test_lm_head.py`` checks every field and the gradients against TRL's own head.

Models whose logits TRL rescales or soft-caps, and MoE models (router losses), keep TRL's head; so
does any model on CUDA/XPU, where TRL's Triton kernel already scores only labelled positions
without building the logits.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from trl.trainer.utils import FusedCausalLMOutput

logger = logging.getLogger(__name__)

METRIC_FIELDS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
"""Per-token fields besides ``log_probs`` a trainer may read (TRL computes them without gradient)."""

LOGITS_PER_CHUNK = 1 << 26
"""Labelled tokens x vocabulary held at once (256 MiB of fp32 logits); larger batches are chunked."""

_RESCALING_ATTRIBUTES = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                         "logits_scaling")


def _carries_adapter(head: torch.nn.Module) -> bool:
    """Whether the output layer is a PEFT layer (``--peft_target_modules`` named lm_head)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(head, BaseTunerLayer)


def _supported(model: PreTrainedModel) -> str | None:
    """Why the label-only head cannot stand in for TRL's on ``model`` (None: it can)."""
    head = model.get_output_embeddings()
    if head is None:
        return "it has no output embeddings"
    text_config = model.config.get_text_config()
    for name in _RESCALING_ATTRIBUTES:
        if getattr(text_config, name, None) is not None:
            if _carries_adapter(head):
                raise ValueError(f"--peft_target_modules adapts lm_head, but this model's config sets {name}, "
                                 "which the fused losses here cannot apply to an adapted head; drop lm_head")
            return f"its config sets {name}"
    if getattr(text_config, "output_router_logits", False):
        return "it is a mixture of experts with router losses"
    # TRL's fused head reads the output layer's base weight only: with a LoRA on lm_head (which TRL's
    # trainers refuse, but a caller may build), the label-only head, which calls the layer itself, is
    # the only correct one, on every device.
    if head.weight.device.type in ("cuda", "xpu") and not _carries_adapter(head):
        return "TRL's Triton kernel already scores only labelled positions on this device"
    return None


def _chunk_fields(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, fields: Sequence[str],
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Log-probability of each target, then the requested metric fields (no gradient), for one chunk."""
    logits = (F.linear(hidden, weight, bias) if project is None else project(hidden)).float()
    # One fused log-softmax (forward and backward): 22% faster than logsumexp + gather here.
    log_probs = -F.cross_entropy(logits, targets, reduction="none")
    extra = []
    if fields:
        with torch.no_grad():
            z = logits.detach()
            lz = torch.logsumexp(z, dim=-1)
            for name in fields:
                if name == "entropy":
                    extra.append(lz - (torch.softmax(z, dim=-1) * z).sum(-1))
                elif name == "log_sum_sq_probs":
                    extra.append(torch.logsumexp(2 * z, dim=-1) - 2 * lz)
                elif name == "mean_logits":
                    extra.append(z.mean(-1))
                else:  # is_top1; argmax returns the first maximum, as TRL's tie rule does
                    extra.append(z.argmax(-1) == targets)
    return (log_probs, *extra)


def label_only_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    fields: Sequence[str] = (),
    logits_per_chunk: int = LOGITS_PER_CHUNK,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Log-softmax of ``hidden @ weight.T (+ bias)`` at ``targets``, plus ``fields``, for [N, H] hidden states.

    ``project``: the output layer itself, when it is more than ``weight`` and ``bias`` (a LoRA-adapted
    lm_head: its logits include the adapter's term); ``weight`` then only gives the vocabulary size.
    When the logits would exceed ``logits_per_chunk`` elements, they are built chunk by chunk and,
    with gradients, recomputed in backward (activation checkpointing), so memory stays bounded for
    long completions at the price of one extra head matmul per chunk.
    """
    tokens = max(1, logits_per_chunk // weight.shape[0])
    if hidden.shape[0] <= tokens:
        return _chunk_fields(hidden, weight, bias, targets, fields, project)
    parts = []
    for start in range(0, hidden.shape[0], tokens):
        h, t = hidden[start:start + tokens], targets[start:start + tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_fields, h, weight, bias, t, fields, project, use_reentrant=False))
        else:
            parts.append(_chunk_fields(h, weight, bias, t, fields, project))
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def _label_only_forward(
    self: PreTrainedModel,
    *args: Any,
    fused_lm_head: bool = False,
    labels: torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    **kwargs: Any,
) -> Any:
    """The model's own forward, or with ``fused_lm_head=True`` a ``FusedCausalLMOutput`` as TRL defines it."""
    if not fused_lm_head:
        for name, value in (("labels", labels), ("shift_labels", shift_labels),
                            ("num_items_in_batch", num_items_in_batch)):
            if value is not None:
                kwargs[name] = value
        return type(self).forward(self, *args, **kwargs)
    kwargs["use_cache"] = False
    hidden_states = self.base_model(*args, **kwargs).last_hidden_state
    if shift_labels is None:
        hidden_states, labels = hidden_states[:, :-1], labels[:, 1:]
    else:
        labels = shift_labels
    head = self.get_output_embeddings()
    labels = labels.to(head.weight.device)
    mask = labels != -100
    fields = self._label_only_fields
    columns = label_only_log_probs(hidden_states.to(head.weight.device)[mask], head.weight, head.bias,
                                   labels[mask], fields, project=head if _carries_adapter(head) else None)
    # masked_scatter keeps an all-masked batch connected to the graph (a differentiable zero loss).
    per_token = [column.new_zeros(mask.shape).masked_scatter(mask, column) for column in columns]
    log_probs = per_token[0]
    given = dict(zip(fields, per_token[1:], strict=True))
    for name in METRIC_FIELDS:
        if name not in given:  # not asked for: zeros, so that a trainer's metric code still runs
            given[name] = torch.zeros(mask.shape, dtype=torch.bool if name == "is_top1" else log_probs.dtype,
                                      device=mask.device)
    denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(
        loss=-log_probs.sum() / denominator,
        log_probs=log_probs,
        entropy=given["entropy"],
        log_sum_sq_probs=given["log_sum_sq_probs"],
        mean_logits=given["mean_logits"],
        is_top1=given["is_top1"],
        label_mask=mask,
    )


def use_label_only_head(model: torch.nn.Module, fields: Sequence[str] = ()) -> bool:
    """Make ``model(..., fused_lm_head=True)`` score only labelled positions; return whether it was installed.

    Call it on the trainer's model *after* building the TRL trainer (which installs its own head).
    ``fields``: the metric fields (``METRIC_FIELDS``) to compute; the others come back as zeros.
    ``model`` may be a PeftModel: the head goes on its base model.
    """
    unknown = set(fields) - set(METRIC_FIELDS)
    if unknown:
        raise ValueError(f"unknown fused-head fields {sorted(unknown)}; choose among {METRIC_FIELDS}")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    reason = _supported(base)
    if reason is not None:
        logger.info("keeping TRL's fused LM head: %s", reason)
        return False
    base._label_only_fields = tuple(fields)

    # The original signature stays visible (as with TRL's patch): generate() checks its model kwargs
    # against it and passes logits_to_keep only to a forward that declares it.
    @functools.wraps(type(base).forward)
    def forward(self: PreTrainedModel, *args: Any, **kwargs: Any) -> Any:
        return _label_only_forward(self, *args, **kwargs)

    base.forward = types.MethodType(forward, base)
    return True
