"""Krum (Blanchard et al., NeurIPS 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent").

Update: with n clients of which at most f are Byzantine (``--num_malicious`` f, n > 2f + 2), each
client i gets the score s(i) = Σ_{j ∈ N(i)} ||y_i - y_j||², N(i) its n - f - 2 nearest other
clients (distances between adapters equal those between the updates Δ_i = y_i - x); the new global
is the adapter of the client with the lowest score, x <- y_{i*}, i* = argmin_i s(i) (ties: the
client sampled first). ``multikrum`` averages the m best instead.

Deliberate differences: the paper selects among the workers' gradients for one step of gradient
descent; here, as Flower's ``Krum``, among the clients' adapters after their local steps, over the
keys the clients send. The flag check requires --sample_clients > 2f + 2; a round whose rejected
replies leave fewer sums over max(1, n - f - 2) neighbours (Flower's convention), where the paper's
guarantee no longer holds. Every client counts once, whatever its ``num_examples``; clients train
at the global rank (no ``--client_lora_ranks``). metrics.jsonl records the chosen client and every
score (``aggregation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config import FedArguments
from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._registry import register
from federated_learning.aggregators._robust import krum_scores, lowest, plain_mean, robust_keys, squared_distances
from federated_learning.types import ClientUpdate, StateDict


@register
class Krum(Aggregator):
    """The client adapter closest to its n - f - 2 nearest neighbours."""

    name = "krum"

    def __init__(self, *, num_malicious: int = FedArguments.num_malicious) -> None:
        """``num_malicious`` f >= 0: the Byzantine clients a round may hold."""
        check_hyperparameters(num_malicious=num_malicious)
        self.num_malicious = int(num_malicious)
        self._record: dict[str, Any] = {}

    def keep(self, n: int) -> int:
        """How many of ``n`` clients the new global averages: Krum's one."""
        return 1

    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """Return the unweighted mean of the ``keep`` best-scored clients' adapters (Krum: the best one's)."""
        keys = robust_keys(self, global_params, updates, server_round)
        scores = krum_scores(squared_distances(updates, keys), self.num_malicious)
        chosen = lowest(scores, self.keep(len(updates)))
        self._record = {"selected_clients": [updates[i].client_id for i in chosen],
                        "scores": {str(u.client_id): s for u, s in zip(updates, scores, strict=True)}}
        return plain_mean(global_params, [updates[i].params for i in chosen], keys)

    def round_record(self) -> dict[str, Any]:
        """The clients the last round selected, and every client's score."""
        return dict(self._record)
