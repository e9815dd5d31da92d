"""Render preference rows with a template and tokenise them, once per run, in DPOTrainer's columns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from utils.constants import SOURCE_ROW
from utils.templates import Template, get_template

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
    """Return ``prompt_ids``, ``chosen_ids`` and ``rejected_ids`` with prompt + answer cut to ``seq_length``.

    As for SFT (and ``evaluation.logprobs``), prompt and answers are tokenised separately (special
    tokens on the prompt only) and a sequence is cut keeping its start, so ``--seq_length`` bounds
    prompt + answer exactly as ``DPOConfig.max_length`` means it. Pairs whose prompt alone fills
    ``seq_length`` have no answer token left to learn from and are dropped (counted in the log);
    when any is, the result has a ``SOURCE_ROW`` column, the index in ``dataset`` of each kept row.
    Run once per run: the round loop selects rows of the result, never re-tokenising.
    """
    template = get_template(template_name)

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        texts = [render_preference_row(row, template, tokenizer) for row in rows]
        prompt_ids = tokenizer([t[0] for t in texts], add_special_tokens=True)["input_ids"]
        chosen_ids = tokenizer([t[1] for t in texts], add_special_tokens=False)["input_ids"]
        rejected_ids = tokenizer([t[2] for t in texts], add_special_tokens=False)["input_ids"]
        out: dict[str, list[Any]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], SOURCE_ROW: []}
        for index, prompt, chosen, rejected in zip(indices, prompt_ids, chosen_ids, rejected_ids, strict=True):
            room = seq_length - len(prompt)
            if room < 1:
                continue
            out[SOURCE_ROW].append(index)
            out["prompt_ids"].append(prompt)
            out["chosen_ids"].append(chosen[:room])
            out["rejected_ids"].append(rejected[:room])
        return out

    tokenized = dataset.map(
        encode, batched=True, with_indices=True, remove_columns=dataset.column_names, desc="Tokenising",
        load_from_cache_file=False,
    )
    if len(tokenized) == len(dataset):
        return tokenized.remove_columns(SOURCE_ROW)
    logger.warning("Dropped %d of %d preference pairs whose prompt alone fills --seq_length %d",
                   len(dataset) - len(tokenized), len(dataset), seq_length)
    return tokenized
