"""Held-out loss and perplexity of the responses of any SFT dataset's test split.

The dataset is ``--sft_dataset`` (any name ``utils.sft_data.load_sft_dataset`` accepts: a bundled
dataset, an OpenFedLLM hub name, a local file; ``--local_data_dir`` as in training), rendered with
``--template`` and tokenised as training does; sequences are cut to ``--seq_length``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.heldout_loss import heldout_loss, render_rows
from evaluation.logprobs import tokenize_pair
from evaluation.registry import Benchmark, BenchmarkResult, EvalSettings, Row, register


@register
class HeldOutLoss(Benchmark):
    """Token-weighted mean negative log-likelihood of reference responses, and its exponential."""

    name = "heldout_loss"
    offline = True  # with the default, bundled dataset
    shuffled = True
    local_layout = "--sft_dataset's test split (see utils/sft_data.py; bundled by default)"
    metric_names = ("loss", "perplexity")
    lower_is_better = ("loss", "perplexity")

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        from utils.sft_data import load_sft_dataset

        return [dict(r) for r in load_sft_dataset(settings.sft_dataset, settings.local_data_dir, 0, "test",
                                                  settings.seed)]

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [{"id": i, "instruction": r["instruction"], "response": r["response"], "reference": r["response"],
                 "history": r.get("history") or []} for i, r in enumerate(rows)]

    def fits(self, examples: Sequence[Row], tokenizer: PreTrainedTokenizerBase, settings: EvalSettings) -> list[bool]:
        """False for rows whose response alone does not fit ``--seq_length`` (``utils.truncation``)."""
        prompts, completions = render_rows(examples, tokenizer, settings.template)
        return [bool(tokenize_pair(tokenizer, p, c, settings.seq_length)[0])
                for p, c in zip(prompts, completions, strict=True)]

    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Row], settings: EvalSettings
    ) -> BenchmarkResult:
        metrics, scores = heldout_loss(model, tokenizer, examples, settings.template, seq_length=settings.seq_length,
                                       batch_size=settings.batch_size, bf16=settings.bf16,
                                       show_progress=settings.show_progress)
        records = [{"id": ex["id"], "prompt": ex["instruction"], "reference": ex["response"],
                    "num_tokens": s.num_tokens, "score": -s.logprob / s.num_tokens if s.num_tokens else None}
                   for ex, s in zip(examples, scores, strict=True)]
        return BenchmarkResult({"loss": metrics["loss"], "perplexity": metrics["perplexity"]}, records)
