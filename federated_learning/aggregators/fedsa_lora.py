"""FedSA-LoRA (Guo, Wu, Fan et al., ICLR 2025, "Selective Aggregation for Low-Rank Adaptation in
Federated Learning").

A learns what the clients share and is averaged; B learns what is specific to each client and never
leaves it. Update: A <- Σ_k p_k A_k (p_k = n_k / Σ n_j); client k keeps its B_k from round to round
(it starts with the global adapter's B, LoRA's zero, the first time it trains). The upload is A alone.

The global model is the averaged A with the mean of the clients' B (weighted by their examples):
that is what the round evaluation scores and ``python -m federated_learning.export --personal mean``
writes; ``--personal <client id>`` writes a client's own model (A and its B). In the simulation the
clients' B live in the checkpoint (``federated_state.safetensors``, ``personal/states/<id>/``), so a
resume continues every client exactly; on Flower each SuperNode keeps its own B in its node state,
which lasts as long as the SuperNode does.

Deliberate difference: the authors' code averages A uniformly; pass ``--client_weighting uniform``
for that.
"""

from __future__ import annotations

from collections.abc import Iterable

from federated_learning.aggregators._base import ClientAlgorithm
from federated_learning.aggregators._registry import register
from federated_learning.aggregators.fedavg import FedAvg
from federated_learning.lora_ranks import is_a, is_b


class FedSaLoraClient(ClientAlgorithm):
    """Sends A, keeps B."""

    @staticmethod
    def sent_keys(server_round: int, keys: Iterable[str]) -> list[str]:
        """Only the A factors."""
        return [key for key in keys if is_a(key)]

    def personal_keys(self, keys: Iterable[str]) -> list[str]:
        """Every B factor."""
        return [key for key in keys if is_b(key)]


@register
class FedSaLora(FedAvg):
    """FedAvg of the A factors; the clients' B are theirs."""

    name = "fedsa_lora"
    client_class = FedSaLoraClient
    supports_client_ranks = False
