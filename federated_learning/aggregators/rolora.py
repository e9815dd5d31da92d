"""RoLoRA (Chen, Guo, Ju, Dalal and Khisti, NeurIPS 2025, "Robust Federated Finetuning of LLMs via
Alternating Optimization of LoRA").

Rounds alternate which factor the clients train, the other frozen at its global value: rounds 1, 3, 5,
... train and send B (A frozen), rounds 2, 4, ... train and send A (B frozen). Update: the trained
factor <- Σ_k p_k (factor)_k (p_k = n_k / Σ n_j); the frozen one stays. Because every client shares
the frozen factor, the mean is exact: Σ_k p_k B_k A = (Σ_k p_k B_k) A, and Σ_k p_k B A_k = B (Σ_k p_k A_k).
B goes first because it starts at zero, where A's gradient (∝ Bᵀ) would be zero. Each round sends
one factor, half of LoRA's upload on square layers.
"""

from __future__ import annotations

from collections.abc import Iterable

from federated_learning.aggregators._base import ClientAlgorithm
from federated_learning.aggregators._registry import register
from federated_learning.aggregators.fedavg import FedAvg
from federated_learning.lora_ranks import is_a, is_b


def trains_b(server_round: int) -> bool:
    """Whether ``server_round`` (0-based) trains B (else A)."""
    return server_round % 2 == 0


class RoLoraClient(ClientAlgorithm):
    """Trains and sends B in even (0-based) rounds, A in odd ones."""

    @staticmethod
    def sent_keys(server_round: int, keys: Iterable[str]) -> list[str]:
        """The factor this round trains."""
        trained = is_b if trains_b(server_round) else is_a
        return [key for key in keys if trained(key)]

    def frozen_keys(self, server_round: int, keys: Iterable[str]) -> set[str]:
        """The other factor."""
        frozen = is_a if trains_b(server_round) else is_b
        return {key for key in keys if frozen(key)}


@register
class RoLora(FedAvg):
    """FedAvg of the factor the round trained."""

    name = "rolora"
    client_class = RoLoraClient
    supports_client_ranks = False
