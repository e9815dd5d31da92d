"""FedEx-LoRA (Singhal, Ponkshe and Vepakomma, ACL 2025, "FedEx-LoRA: Exact Aggregation for Federated and
Efficient Fine-Tuning of Foundation Models").

FedAvg of the factors, plus the part of the clients' mean product that the averaged factors miss,
folded into the frozen weights. Update (p_k = n_k / Σ n_j): A <- Σ_k p_k A_k, B <- Σ_k p_k B_k,
M <- M + Σ_k p_k B_k A_k − B·A (with the new A, B). The model is W0 + s·(M + B·A), s = α/r
(``federated_learning.merged_delta``), so it becomes W0 + s·(M_old + Σ_k p_k B_k A_k): the
clients' models averaged exactly, and the next round trains on top of it with the averaged LoRA.

Deliberate differences: M is a float32 matrix per adapted layer beside the (possibly 4/8-bit) base
weight, not added into it, and travels to the clients with the adapter (dense, out x in per layer,
as the paper's residual does). The authors' code averages uniformly; pass ``--client_weighting
uniform`` for that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._lora import (
    check_lora_updates,
    example_weights,
    merged_or_zero,
    sent_keys,
    weighted_products,
)
from federated_learning.aggregators._registry import register
from federated_learning.lora_ranks import factor_pairs, product
from federated_learning.merged_delta import merged_key
from federated_learning.state import weighted_average
from federated_learning.types import ClientUpdate, StateDict


@register
class FedExLoRA(Aggregator):
    """FedAvg of A and B, the residual of the mean product merged into M."""

    name = "fedex_lora"
    merges_into_base = True

    @torch.no_grad()
    def aggregate(self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int) -> StateDict:
        """The averaged factors, and M plus the residual Σ_k p_k B_k A_k − B̄·Ā."""
        adapter, merged = merged_or_zero(global_params)
        check_lora_updates(adapter, updates, sent_keys(self, adapter, server_round), self.supports_client_ranks)
        weights = example_weights(updates)
        mean = weighted_average([u.params for u in updates], weights)
        products = weighted_products(adapter, updates, weights)
        new_merged = dict(merged)
        for a_key, b_key in factor_pairs(list(adapter)).values():
            key = merged_key(a_key)
            residual = products[key] - product(mean, a_key, b_key)
            new_merged[key] = (merged[key].float() + residual).to(merged[key].dtype)
        return {**adapter, **mean, **new_merged}
