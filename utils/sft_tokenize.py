"""Turn instruction/response rows into token ids with the loss on the response only."""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from utils.templates import get_template

IGNORE_INDEX = -100


def tokenize_sft(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, template_name: str, seq_length: int) -> Dataset:
    """Return ``input_ids`` and ``labels`` (-100 on prompt tokens), truncated to ``seq_length``.

    Prompt and completion are tokenised separately and concatenated, so the boundary between them
    is exact and the prompt tokens match what generation sees at evaluation time. Run once per
    run: the round loop selects rows of the result, never re-tokenising.
    """
    template = get_template(template_name)

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        prompts = [template.prompt(i, tokenizer) for i in batch["instruction"]]
        pairs = zip(batch["instruction"], batch["response"], strict=True)
        completions = [template.completion(i, r, tokenizer) for i, r in pairs]
        prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
        completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
        input_ids, labels = [], []
        for p, c in zip(prompt_ids, completion_ids, strict=True):
            ids = (p + c)[:seq_length]
            input_ids.append(ids)
            labels.append(([IGNORE_INDEX] * len(p) + c)[:seq_length])
        return {"input_ids": input_ids, "labels": labels}

    return dataset.map(
        encode, batched=True, remove_columns=dataset.column_names, desc="Tokenising", load_from_cache_file=False
    )
