"""Log-probability of a completion given its prompt: the core of held-out loss and DPO rewards.

Tokenisation follows the training side (``utils/sft_tokenize.py``): prompt and completion are
tokenised separately (special tokens on the prompt only) and concatenated; what does not fit
``seq_length`` follows ``utils.truncation`` (the completion whole, the prompt cut from the left).
The evaluated loss is thus the training loss on unseen rows; a row whose completion alone does not
fit contributes no tokens (``num_tokens`` 0).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.generation import ensure_pad_token, eval_mode
from utils.truncation import fit_prompt


@dataclass(frozen=True)
class CompletionLogProb:
    """Summed log-probability of one completion's tokens, and how many tokens it has (0: cut away)."""

    logprob: float
    num_tokens: int


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str, seq_length: int
) -> tuple[list[int], int]:
    """Token ids of ``prompt`` + ``completion`` within ``seq_length``, and how many of them are prompt.

    ``([], 0)`` when the completion alone does not fit (``utils.truncation``).
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    fitted = fit_prompt(prompt_ids, len(completion_ids), seq_length, tokenizer.bos_token_id)
    if fitted is None:
        return [], 0
    return fitted + completion_ids, len(fitted)


def _batches(items: list[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def completion_logprobs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    seq_length: int = 256,
    batch_size: int = 8,
    bf16: bool = False,
    show_progress: bool = False,
) -> list[CompletionLogProb]:
    """Sum of log p(completion token | everything before it) for each (prompt, completion) pair.

    Batches are left-padded so that every completion ends at the last position: only the logits of
    the last ``max completion length + 1`` positions are computed (``logits_to_keep``), which keeps
    the memory of a 49k-token vocabulary in check when completions are short. Position ids are
    derived from the attention mask, so left padding does not shift positions.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if seq_length < 2:
        raise ValueError(f"seq_length must be >= 2, got {seq_length}")
    ensure_pad_token(tokenizer)
    encoded = [tokenize_pair(tokenizer, p, c, seq_length) for p, c in zip(prompts, completions, strict=True)]
    results = [CompletionLogProb(0.0, 0)] * len(encoded)
    # Longest first: fewer pad tokens per batch; a row needs a prompt token to condition on.
    order = sorted(
        (i for i, (ids, plen) in enumerate(encoded) if len(ids) > plen >= 1), key=lambda i: -len(encoded[i][0])
    )
    device = next(model.parameters()).device
    batches = list(_batches(order, batch_size))
    if show_progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="log-probs", leave=False)
    with (
        eval_mode(model),
        torch.no_grad(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
    ):
        for batch in batches:
            results_batch = _batch_logprobs(model, [encoded[i] for i in batch], tokenizer.pad_token_id, device)
            for i, result in zip(batch, results_batch, strict=True):
                results[i] = result
    return results


def _batch_logprobs(
    model: torch.nn.Module, rows: list[tuple[list[int], int]], pad_id: int, device: torch.device
) -> list[CompletionLogProb]:
    """Completion log-probs of one left-padded batch."""
    width = max(len(ids) for ids, _ in rows)
    completion_lens = [len(ids) - plen for ids, plen in rows]
    keep = max(completion_lens) + 1
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, _) in enumerate(rows):
        input_ids[r, width - len(ids):] = torch.tensor(ids)
        attention[r, width - len(ids):] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    output = model(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        logits_to_keep=keep,
        use_cache=False,
    )
    # logits[:, t] predicts token t+1: the last `keep` positions predict the last `keep - 1` tokens.
    logits = output.logits[:, -keep:-1, :].float()
    targets = input_ids[:, width - keep + 1:].to(device)
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    results = []
    for r, n in enumerate(completion_lens):
        results.append(CompletionLogProb(float(token_logp[r, keep - 1 - n:].sum()), n))
    return results
