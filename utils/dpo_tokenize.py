"""Render preference rows with a template and tokenise them, once per run, in DPOTrainer's columns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from utils.constants import PROMPT_CUT, SOURCE_ROW
from utils.templates import Template, get_template
from utils.truncation import FitCounts, count_fit, drop_unused_bookkeeping, fit_prompt

logger = logging.getLogger(__name__)


def render_preference_row(
    row: Mapping[str, Any], template: Template, tokenizer: PreTrainedTokenizerBase
) -> tuple[str, str, str]:
    """The prompt text and the chosen and rejected completions (end-of-turn marker included) of one row."""
    turns = list(row["prompt"])
    prompt = template.conversation_prompt(turns, tokenizer)
    chosen = template.completion(turns[-1], row["chosen"], tokenizer)
    rejected = template.completion(turns[-1], row["rejected"], tokenizer)
    return prompt, chosen, rejected


def tokenize_dpo(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, template_name: str, seq_length: int) -> Dataset:
    """Return ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``, prompt + each answer at most ``seq_length`` tokens.

    As for SFT (and ``evaluation.logprobs``), prompt and answers are tokenised separately (special
    tokens on the prompt only), and what does not fit follows ``utils.truncation``: both answers are
    kept whole and the prompt is cut from the left to fit the longer of them, so ``--seq_length``
    bounds prompt + answer exactly as ``DPOConfig.max_length`` means it; a pair whose longer answer
    alone does not fit is left out. ``PROMPT_CUT`` / ``SOURCE_ROW`` columns as in ``tokenize_sft``.
    Run once per run: the round loop selects rows of the result, never re-tokenising.
    """
    template = get_template(template_name)
    counts = FitCounts()

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        texts = [render_preference_row(row, template, tokenizer) for row in rows]
        prompt_ids = tokenizer([t[0] for t in texts], add_special_tokens=True)["input_ids"]
        chosen_ids = tokenizer([t[1] for t in texts], add_special_tokens=False)["input_ids"]
        rejected_ids = tokenizer([t[2] for t in texts], add_special_tokens=False)["input_ids"]
        out: dict[str, list[Any]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], SOURCE_ROW: [],
                                     PROMPT_CUT: []}
        for index, prompt, chosen, rejected in zip(indices, prompt_ids, chosen_ids, rejected_ids, strict=True):
            fitted = fit_prompt(prompt, max(len(chosen), len(rejected)), seq_length, tokenizer.bos_token_id)
            count_fit(counts, prompt, fitted)
            if fitted is None:
                continue
            out["prompt_ids"].append(fitted)
            out["chosen_ids"].append(chosen)
            out["rejected_ids"].append(rejected)
            out[SOURCE_ROW].append(index)
            out[PROMPT_CUT].append(len(fitted) < len(prompt))
        return out

    tokenized = dataset.map(
        encode, batched=True, with_indices=True, remove_columns=dataset.column_names, desc="Tokenising",
        load_from_cache_file=False,
    )
    return drop_unused_bookkeeping(tokenized, counts, seq_length)
