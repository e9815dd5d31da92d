"""FFA-LoRA (Sun, Li, Ding and Li, ICLR 2024, "Improving LoRA in Privacy-preserving Federated Learning").

Every A stays at its initialisation A_0, drawn from ``--seed`` and the same on every client; clients
train and send only B. Update: B <- Σ_k p_k B_k (p_k = n_k / Σ n_j), A = A_0. Since the weight change
B·A_0 is linear in B, this averages the clients' weight changes exactly: Σ_k p_k B_k A_0 = B·A_0.
The upload is B alone, half of LoRA's on square layers.

Deliberate differences: the paper pairs it with a larger scaling α (its "scaling factor" study) and
with DP-SGD; here α is ``--peft_lora_alpha`` as for every method, and no noise is added.
"""

from __future__ import annotations

from collections.abc import Iterable

from federated_learning.aggregators._base import ClientAlgorithm
from federated_learning.aggregators._registry import register
from federated_learning.aggregators.fedavg import FedAvg
from federated_learning.lora_ranks import is_a, is_b


class FfaLoraClient(ClientAlgorithm):
    """Trains and sends B; A stays frozen."""

    @staticmethod
    def sent_keys(server_round: int, keys: Iterable[str]) -> list[str]:
        """Only the B factors."""
        return [key for key in keys if is_b(key)]

    def frozen_keys(self, server_round: int, keys: Iterable[str]) -> set[str]:
        """Every A factor."""
        return {key for key in keys if is_a(key)}


@register
class FfaLora(FedAvg):
    """FedAvg of the B factors; A never changes (the clients do not send it)."""

    name = "ffa_lora"
    client_class = FfaLoraClient
    supports_client_ranks = False
