"""DPO preference metrics on a preference dataset's held-out split: implicit-reward accuracy and margin.

The dataset is ``--preference_dataset`` (any name ``utils.dpo_data.load_dpo_dataset`` accepts:
``bundled/preferences``, the OpenFedLLM hub datasets, local files; ``--local_data_dir`` as in
training), held-out split (``test``, or ``test_prefs`` for UltraFeedback). Rows are rendered and
tokenised as DPO training does, and the metrics are those of ``evaluation.preference_eval`` (the
round loop's DPO evaluator): with r = beta * (log pi(y|x) - log pi_ref(y|x)), pi_ref the run's
reference (the adapter disabled), preference accuracy (ties count one half), mean reward margin,
mean DPO loss, and likelihood accuracy (log pi(chosen) > log pi(rejected), which needs no reference).
A plain base model is its own reference: margin 0, accuracy 0.5.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.logprobs import completion_logprobs
from evaluation.registry import Benchmark, BenchmarkResult, EvalSettings, Row, register


def _reference(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The DPO reference policy of ``model`` inside the block (a plain model is its own reference)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return contextlib.nullcontext()
    from federated_learning.trainers import reference_policy

    return reference_policy(model)


@register
class DPOPreference(Benchmark):
    """How strongly the adapter prefers chosen over rejected answers, relative to its reference."""

    name = "dpo_preference"
    offline = True  # with the default, bundled dataset
    local_layout = "--preference_dataset (see utils/dpo_data.py): prompt, chosen, rejected; bundled by default"
    metric_names = ("preference_accuracy", "reward_margin", "dpo_loss", "likelihood_accuracy")
    pinned_dataset: str | None = None  # subclasses evaluate one fixed dataset

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        from utils.dpo_data import default_split, heldout_split, load_dpo_dataset

        name = self.pinned_dataset or settings.preference_dataset
        split = heldout_split(default_split(name))
        return [dict(r) for r in load_dpo_dataset(name, settings.local_data_dir, 0, split, settings.seed)]

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [{"id": i, **row, "reference": "chosen"} for i, row in enumerate(rows)]

    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Row], settings: EvalSettings
    ) -> BenchmarkResult:
        from evaluation.preference_eval import preference_metrics
        from utils.dpo_tokenize import render_preference_row
        from utils.templates import get_template

        template = get_template(settings.template)
        rendered = [render_preference_row(ex, template, tokenizer) for ex in examples]
        prompts = [r[0] for r in rendered] * 2
        completions = [r[1] for r in rendered] + [r[2] for r in rendered]
        kwargs = {"seq_length": settings.seq_length, "batch_size": settings.batch_size, "bf16": settings.bf16}
        policy = completion_logprobs(model, tokenizer, prompts, completions, **kwargs)
        with _reference(model):
            reference = completion_logprobs(model, tokenizer, prompts, completions, **kwargs)
        n = len(examples)
        kept = [i for i in range(n) if policy[i].num_tokens and policy[n + i].num_tokens]
        if not kept:
            raise ValueError(f"{self.name}: no pair keeps an answer token within --seq_length {settings.seq_length}")

        def column(scores: list, offset: int) -> torch.Tensor:
            return torch.tensor([scores[offset + i].logprob for i in kept], dtype=torch.float64)

        metrics = preference_metrics(column(policy, 0), column(policy, n), column(reference, 0),
                                     column(reference, n), settings.dpo_beta)
        metrics = {key.removeprefix("eval_"): value for key, value in metrics.items()}
        records = []
        for i, (ex, (prompt, chosen, rejected)) in enumerate(zip(examples, rendered, strict=True)):
            margin = settings.dpo_beta * ((policy[i].logprob - reference[i].logprob)
                                          - (policy[n + i].logprob - reference[n + i].logprob))
            records.append({
                "id": ex["id"], "prompt": prompt, "chosen": chosen, "rejected": rejected,
                "logp_chosen": policy[i].logprob, "logp_rejected": policy[n + i].logprob,
                "ref_logp_chosen": reference[i].logprob, "ref_logp_rejected": reference[n + i].logprob,
                "reward_margin": margin, "scored": i in kept, "score": float(margin > 0) + 0.5 * float(margin == 0),
            })
        return BenchmarkResult(metrics, records)
