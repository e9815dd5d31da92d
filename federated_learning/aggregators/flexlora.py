"""FlexLoRA (Bai, Chen, Qian, Pan and Zhou, NeurIPS 2024, "Federated Fine-tuning of Large Language Models
under Heterogeneous Tasks and Client Resources").

The server averages the clients' full weight changes and hands each client the best approximation
of the average its rank allows. Update (p_k = n_k / Σ n_j): ΔW <- Σ_k p_k B_k A_k per adapted layer;
client k then starts from B = U_{r_k} Σ_{r_k}, A = V_{r_k}ᵀ, the rank-r_k truncation of the SVD
ΔW = U Σ Vᵀ, which is the best rank-r_k approximation in Frobenius norm (Eckart–Young). The global
model is W0 + s·ΔW (s = α/r): ΔW is kept as the merged delta M (``federated_learning.merged_delta``)
and the global adapter's B is zero. Clients never receive M: their LoRA is their whole change. In
the first round (ΔW still zero) every client starts from the global adapter as LoRA initialises it.

Deliberate difference: every client's LoRA is scaled by the global α/r
(``federated_learning.lora_ranks``); the authors' code scales a rank-r_k client by α/r_k.
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
from federated_learning.lora_ranks import factor_pairs, is_b
from federated_learning.merged_delta import merged_key, split_state
from federated_learning.types import ClientUpdate, StateDict


@torch.no_grad()
def svd_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) = (U_r Σ_r, V_rᵀ) of ``delta``'s SVD, in float32: B·A is its best rank-``rank`` approximation."""
    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank]


@register
class FlexLoRA(Aggregator):
    """The clients' mean full update, and each client's SVD truncation of it."""

    name = "flexlora"
    merges_into_base = True
    supports_client_ranks = True
    fresh_factors = True

    def __init__(self) -> None:
        """No hyperparameters; caches the SVD factors of the latest global state."""
        self._svd: tuple[StateDict, StateDict] | None = None

    def client_start(self, client_id: int, server_round: int, global_params: StateDict) -> StateDict:
        """The SVD factors of ΔW at the global rank (the round loop truncates them to the client's), no M."""
        adapter, merged = split_state(global_params)
        if not any(bool(m.any()) for m in merged.values()):
            return adapter
        if self._svd is None or self._svd[0] is not global_params:  # the round loop passes one state to every client
            factors: StateDict = {}
            for a_key, b_key in factor_pairs(list(adapter)).values():
                b, a = svd_factors(merged[merged_key(a_key)], adapter[a_key].shape[0])
                factors[a_key], factors[b_key] = a.to(adapter[a_key].dtype), b.to(adapter[b_key].dtype)
            self._svd = (global_params, factors)
        return {**adapter, **self._svd[1]}

    def aggregate(self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int) -> StateDict:
        """ΔW = Σ_k p_k B_k A_k as M; the global adapter's A as it is, its B zero."""
        adapter, merged = merged_or_zero(global_params)
        check_lora_updates(adapter, updates, sent_keys(self, adapter, server_round), self.supports_client_ranks)
        products = weighted_products(adapter, updates, example_weights(updates))
        zero_b = {key: torch.zeros_like(t) if is_b(key) else t.clone() for key, t in adapter.items()}
        return {**zero_b, **{key: products[key].to(merged[key].dtype) for key in merged}}
