"""DPO preference metrics on a preference dataset's held-out split: implicit-reward accuracy and margin.

DPO's implicit reward of an answer y to a prompt x is ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``,
pi_ref the model's reference policy (``utils.model.reference_policy``: its frozen ``ref`` adapter,
else the base model with the adapter disabled; a plain model is its own reference). On held-out
pairs it reports

- ``preference_accuracy``: share of pairs with r(chosen) > r(rejected), a tie counting one half
  (before training the policy is the reference, every margin is 0 and the accuracy is 0.5);
- ``reward_margin``: mean r(chosen) - r(rejected); ``dpo_loss``: mean -log sigmoid(margin);
- ``likelihood_accuracy``: share of pairs where the policy itself gives the chosen answer the
  higher log-probability (meaningful before training too);
- ``pairs``: pairs scored (a pair whose answers are cut away by ``--seq_length`` is left out);
- ``preference_accuracy/<category>`` per value of a ``category`` column, when the pairs have one.

The dataset is ``--preference_dataset`` (any name ``utils.dpo_data.load_dpo_dataset`` accepts:
``bundled/preferences``, the OpenFedLLM hub datasets, local files; ``--local_data_dir`` as in
training), held-out split (``test``, or ``test_prefs`` for UltraFeedback's ``train_prefs``). Rows
are rendered and tokenised as DPO training does (``utils.dpo_tokenize``). With
``cache_reference`` (a training run's round evaluation: its reference is fixed) the reference
log-probabilities are computed once and kept.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from evaluation.logprobs import CompletionLogProb, completion_logprobs, tokenize_pair
from evaluation.registry import Benchmark, BenchmarkResult, EvalSettings, Row, register

logger = logging.getLogger(__name__)


@torch.no_grad()
def preference_metrics(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> dict[str, float]:
    """Accuracy, margin and loss of the implicit reward from per-pair summed log-probabilities (1-D tensors)."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))

    def share_greater(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a > b).double() + 0.5 * (a == b).double()).mean())

    return {
        "preference_accuracy": share_greater(margin, torch.zeros_like(margin)),
        "reward_margin": float(margin.double().mean()),
        "dpo_loss": float(F.softplus(-margin.double()).mean()),
        "likelihood_accuracy": share_greater(policy_chosen, policy_rejected),
        "pairs": float(margin.numel()),
    }


def _reference(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The DPO reference policy of ``model`` inside the block (a plain model is its own reference)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return contextlib.nullcontext()
    from utils.model import reference_policy

    return reference_policy(model)


@register
class DPOPreference(Benchmark):
    """How strongly the adapter prefers chosen over rejected answers, relative to its reference."""

    name = "dpo_preference"
    offline = True  # with the default, bundled dataset
    shuffled = True
    local_layout = "--preference_dataset (see utils/dpo_data.py): prompt, chosen, rejected; bundled by default"
    metric_names = ("preference_accuracy", "reward_margin", "dpo_loss", "likelihood_accuracy")
    lower_is_better = ("dpo_loss",)
    pinned_dataset: str | None = None  # subclasses evaluate one fixed dataset

    def __init__(self) -> None:
        self._cached_reference: list[CompletionLogProb] | None = None

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        from utils.dpo_data import default_split, heldout_split, load_dpo_dataset

        name = self.pinned_dataset or settings.preference_dataset
        split = heldout_split(default_split(name, None if self.pinned_dataset else settings.preference_split))
        return [dict(r) for r in load_dpo_dataset(name, settings.local_data_dir, 0, split, settings.seed)]

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [{"id": i, **row, "reference": "chosen"} for i, row in enumerate(rows)]

    def fits(self, examples: Sequence[Row], tokenizer: PreTrainedTokenizerBase, settings: EvalSettings) -> list[bool]:
        """False for pairs of which an answer alone does not fit ``--seq_length`` (``utils.truncation``)."""
        from utils.dpo_tokenize import render_preference_row
        from utils.templates import get_template

        template = get_template(settings.template)
        rendered = [render_preference_row(ex, template, tokenizer) for ex in examples]
        return [bool(tokenize_pair(tokenizer, p, c, settings.seq_length)[0]
                     and tokenize_pair(tokenizer, p, r, settings.seq_length)[0]) for p, c, r in rendered]

    def _reference_logprobs(self, model: torch.nn.Module, score: callable, settings: EvalSettings
                            ) -> list[CompletionLogProb]:
        if settings.cache_reference and self._cached_reference is not None:
            return self._cached_reference
        with _reference(model):
            reference = score()
        if settings.cache_reference:
            self._cached_reference = reference
        return reference

    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Row], settings: EvalSettings
    ) -> BenchmarkResult:
        from utils.dpo_tokenize import render_preference_row
        from utils.templates import get_template

        template = get_template(settings.template)
        rendered = [render_preference_row(ex, template, tokenizer) for ex in examples]
        prompts = [r[0] for r in rendered] * 2
        completions = [r[1] for r in rendered] + [r[2] for r in rendered]

        def score() -> list[CompletionLogProb]:
            return completion_logprobs(model, tokenizer, prompts, completions, seq_length=settings.seq_length,
                                       batch_size=settings.batch_size, bf16=settings.bf16)

        reference = self._reference_logprobs(model, score, settings)
        policy = score()
        n = len(examples)
        kept = [i for i in range(n) if policy[i].num_tokens and policy[n + i].num_tokens]
        if not kept:
            raise ValueError(f"{self.name}: no pair keeps an answer token within --seq_length {settings.seq_length}")

        def column(scores: Sequence[CompletionLogProb], offset: int, rows: Sequence[int]) -> torch.Tensor:
            return torch.tensor([scores[offset + i].logprob for i in rows], dtype=torch.float64)

        def metrics_of(rows: Sequence[int]) -> dict[str, float]:
            return preference_metrics(column(policy, 0, rows), column(policy, n, rows), column(reference, 0, rows),
                                      column(reference, n, rows), settings.dpo_beta)

        metrics = metrics_of(kept)
        # Per category (``preference_accuracy/<category>``) and, where pairs name their user group (bundled/
        # style_preferences), per group (``preference_accuracy/group=<group>``).
        for key, label in (("category", "{}"), ("group", "group={}")):
            values = {i: str(examples[i][key]) for i in kept if examples[i].get(key) is not None}
            for value in sorted(set(values.values())):
                rows = [i for i in kept if values.get(i) == value]
                metrics[f"preference_accuracy/{label.format(value)}"] = metrics_of(rows)["preference_accuracy"]
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
