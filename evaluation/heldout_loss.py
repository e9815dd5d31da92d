"""Held-out loss and perplexity of the response tokens given the prompt, on instruction/response rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.logprobs import CompletionLogProb, completion_logprobs
from utils.templates import get_template


def render_rows(
    rows: Sequence[Mapping[str, str]], tokenizer: PreTrainedTokenizerBase, template_name: str
) -> tuple[list[str], list[str]]:
    """Prompts and completions of ``rows`` (``instruction``/``response`` columns, and a multi-turn row's
    ``history``) under a template."""
    template = get_template(template_name)
    prompts = [template.sft_prompt(row["instruction"], row.get("history"), tokenizer) for row in rows]
    completions = [template.completion(row["instruction"], row["response"], tokenizer) for row in rows]
    return prompts, completions


def loss_from_logprobs(scores: Sequence[CompletionLogProb]) -> dict[str, float]:
    """Token-weighted mean negative log-likelihood (as the training loss averages) and its perplexity."""
    num_tokens = sum(s.num_tokens for s in scores)
    if num_tokens == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "num_tokens": 0.0, "num_examples": 0.0}
    loss = -sum(s.logprob for s in scores) / num_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),  # exp overflows past ~709
        "num_tokens": float(num_tokens),
        "num_examples": float(sum(1 for s in scores if s.num_tokens)),
    }


def heldout_loss(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, str]],
    template_name: str,
    seq_length: int = 256,
    batch_size: int = 8,
    bf16: bool = False,
    show_progress: bool = False,
) -> tuple[dict[str, float], list[CompletionLogProb]]:
    """Mean loss and perplexity of the responses in ``rows``; also the per-row log-probs."""
    prompts, completions = render_rows(rows, tokenizer, template_name)
    scores = completion_logprobs(
        model, tokenizer, prompts, completions, seq_length=seq_length, batch_size=batch_size, bf16=bf16,
        show_progress=show_progress,
    )
    return loss_from_logprobs(scores), scores
