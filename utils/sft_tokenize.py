"""Turn instruction/response rows into token ids with the loss on the response only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from utils.constants import PROMPT_CUT, SOURCE_ROW
from utils.templates import get_template
from utils.truncation import FitCounts, count_fit, drop_unused_bookkeeping, fit_prompt

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


def tokenize_sft(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, template_name: str, seq_length: int) -> Dataset:
    """Return ``input_ids`` and ``labels`` (-100 on prompt tokens), at most ``seq_length`` tokens each.

    Prompt and completion are tokenised separately and concatenated, so the boundary between them
    is exact and the prompt tokens match what generation sees at evaluation time. What does not fit
    ``seq_length`` follows ``utils.truncation``: the response is kept whole and the prompt cut from
    the left, and a row whose response alone does not fit is left out. When a prompt was cut the
    result has a ``PROMPT_CUT`` column, and when a row was left out a ``SOURCE_ROW`` column (the index
    in ``dataset`` of each kept row); the counts are logged. Run once per run: the round loop
    selects rows of the result, never re-tokenising.
    """
    template = get_template(template_name)
    counts = FitCounts()

    def encode(batch: dict[str, list[str]], indices: list[int]) -> dict[str, list[object]]:
        histories = batch.get("history") or [None] * len(batch["instruction"])
        prompts = [template.sft_prompt(i, h, tokenizer) for i, h in zip(batch["instruction"], histories, strict=True)]
        pairs = zip(batch["instruction"], batch["response"], strict=True)
        completions = [template.completion(i, r, tokenizer) for i, r in pairs]
        prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
        completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
        out: dict[str, list[object]] = {"input_ids": [], "labels": [], SOURCE_ROW: [], PROMPT_CUT: []}
        for index, p, c in zip(indices, prompt_ids, completion_ids, strict=True):
            fitted = fit_prompt(p, len(c), seq_length, tokenizer.bos_token_id)
            count_fit(counts, p, fitted)
            if fitted is None:
                continue
            out["input_ids"].append(fitted + c)
            out["labels"].append([IGNORE_INDEX] * len(fitted) + c)
            out[SOURCE_ROW].append(index)
            out[PROMPT_CUT].append(len(fitted) < len(p))
        return out

    tokenized = dataset.map(encode, batched=True, with_indices=True, remove_columns=dataset.column_names,
                            desc="Tokenising", load_from_cache_file=False)
    return drop_unused_bookkeeping(tokenized, counts, seq_length)
