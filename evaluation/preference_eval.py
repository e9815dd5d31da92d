"""Held-out preference metrics of a DPO run: does the implicit reward prefer the chosen answer, and by how much.

DPO's implicit reward of an answer y to a prompt x is ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``
with the run's own reference policy (``federated_learning.trainers.reference_policy``). On held-out
pairs this evaluator reports

- ``eval_preference_accuracy``: share of pairs with r(chosen) > r(rejected), a tie counting one half
  (before training the policy is the reference, every margin is 0 and the accuracy is 0.5);
- ``eval_reward_margin``: mean r(chosen) - r(rejected); ``eval_dpo_loss``: mean -log sigmoid(margin);
- ``eval_likelihood_accuracy``: share of pairs where the policy itself gives the chosen answer the
  higher log-probability (meaningful before training too);
- ``eval_pairs``: pairs scored (a pair whose answers are cut away by ``seq_length`` is left out);
- ``eval_preference_accuracy/<category>`` per value of a ``category`` column, when the pairs have one.

Tokenisation is the training one (``utils.dpo_tokenize``) through ``evaluation.logprobs``. The
reference log-probabilities are computed once and kept: the reference is fixed for a run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from evaluation.logprobs import CompletionLogProb, completion_logprobs
from utils.dpo_tokenize import render_preference_row
from utils.templates import get_template

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
        "eval_preference_accuracy": share_greater(margin, torch.zeros_like(margin)),
        "eval_reward_margin": float(margin.double().mean()),
        "eval_dpo_loss": float(F.softplus(-margin.double()).mean()),
        "eval_likelihood_accuracy": share_greater(policy_chosen, policy_rejected),
        "eval_pairs": float(margin.numel()),
    }


def load_heldout_pairs(
    dataset_name: str, local_data_dir: str | None, num_samples: int, train_split: str | None, seed: int
) -> list[dict[str, Any]]:
    """Up to ``num_samples`` pairs of the held-out split matching ``train_split`` ([] when it has none; logged)."""
    from utils.dpo_data import default_split, heldout_split, load_dpo_dataset

    split = heldout_split(default_split(dataset_name, train_split))
    try:
        dataset = load_dpo_dataset(dataset_name, local_data_dir, num_samples, split, seed)
    except (ValueError, FileNotFoundError) as err:
        logger.warning("No held-out preference evaluation for %s: no usable %s split (%s)", dataset_name, split, err)
        return []
    return [dict(row) for row in dataset]


class PreferenceEvaluator:
    """Held-out preference metrics of a PeftModel against its DPO reference; build once, call after any round."""

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        tokenizer: PreTrainedTokenizerBase,
        template_name: str,
        beta: float,
        seq_length: int = 256,
        batch_size: int = 32,
        *,
        bf16: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"--eval_batch_size must be >= 1, got {batch_size}")
        template = get_template(template_name)
        rendered = [render_preference_row(row, template, tokenizer) for row in rows]
        # Chosen answers first, then rejected: one pass of completion_logprobs scores both.
        self.prompts = [r[0] for r in rendered] * 2
        self.completions = [r[1] for r in rendered] + [r[2] for r in rendered]
        self.num_pairs = len(rendered)
        self.categories = [str(row["category"]) if row.get("category") is not None else None for row in rows]
        self.tokenizer = tokenizer
        self.beta = beta
        self.seq_length = seq_length
        self.batch_size = batch_size
        self.bf16 = bf16
        self._reference: list[CompletionLogProb] | None = None
        logger.info("Preference evaluation on %d held-out pairs", self.num_pairs)

    def _logprobs(self, model: torch.nn.Module) -> list[CompletionLogProb]:
        return completion_logprobs(
            model, self.tokenizer, self.prompts, self.completions,
            seq_length=self.seq_length, batch_size=self.batch_size, bf16=self.bf16,
        )

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """Evaluate the PeftModel ``model`` (its active adapter) against its reference; returns ``eval_*`` metrics."""
        if self.num_pairs == 0:
            return {}
        from federated_learning.trainers import reference_policy

        start = time.perf_counter()
        if self._reference is None:
            with reference_policy(model):
                self._reference = self._logprobs(model)
        policy = self._logprobs(model)
        n = self.num_pairs
        # A pair counts only when both of its answers kept at least one token within seq_length.
        kept = [i for i in range(n) if policy[i].num_tokens and policy[n + i].num_tokens]
        if not kept:
            logger.warning("No held-out pair has an answer token within --seq_length %d", self.seq_length)
            return {}

        def column(scores: list[CompletionLogProb], offset: int) -> torch.Tensor:
            return torch.tensor([scores[offset + i].logprob for i in kept], dtype=torch.float64)

        policy_c, policy_r = column(policy, 0), column(policy, n)
        ref_c, ref_r = column(self._reference, 0), column(self._reference, n)
        metrics = preference_metrics(policy_c, policy_r, ref_c, ref_r, self.beta)
        categories = [self.categories[i] for i in kept]
        for category in sorted({c for c in categories if c is not None}):
            mask = torch.tensor([c == category for c in categories])
            by_category = preference_metrics(policy_c[mask], policy_r[mask], ref_c[mask], ref_r[mask], self.beta)
            metrics[f"eval_preference_accuracy/{category}"] = by_category["eval_preference_accuracy"]
        logger.info("Preference evaluation took %.1f s: %s", time.perf_counter() - start, metrics)
        return metrics
