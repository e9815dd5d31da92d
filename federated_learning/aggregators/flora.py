"""FLoRA (Wang, Shen, Zhang et al., NeurIPS 2024, "FLoRA: Federated Fine-Tuning Large Language Models
with Heterogeneous Low-Rank Adaptations").

The server stacks the clients' factors, A = [p_1 A_1; ...; p_K A_K] and B = [B_1, ..., B_K], whose
product is exactly Σ_k p_k B_k A_k (p_k = n_k / Σ n_j) whatever each client's rank r_k; it merges
that product into the model and every client starts the next round from a fresh LoRA. Update:
M <- M + Σ_k p_k B_k A_k, then A <- a new draw of PEFT's initialisation (Kaiming-uniform, a = √5,
from ``--seed`` and the round), B <- 0. The model is W0 + s·(M + B·A), s = α/r
(``federated_learning.merged_delta``), so after a round the weight change is s·Σ_k p_k B_k A_k:
the clients' mean change, exactly.

Deliberate differences: the stack is kept as its product M, a float32 matrix per adapted layer
beside the (possibly 4/8-bit) base weight, not merged into it; so the download is M itself (dense,
out x in per layer) plus the fresh LoRA, where the paper sends the stacked factors (Σ_k r_k
components) for each client to add to its own copy. Every client's LoRA is scaled by the global
α/r (``federated_learning.lora_ranks``); the paper's code scales the stack by α/r_k per client.
"""

from __future__ import annotations

import math
import random
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
from federated_learning.lora_ranks import is_a, is_b
from federated_learning.types import ClientUpdate, StateDict


@torch.no_grad()
def fresh_lora(adapter: StateDict, seed: int, server_round: int) -> StateDict:
    """A new LoRA shaped like ``adapter``: each A drawn as PEFT initialises it, from (seed, round), B zero."""
    generator = torch.Generator().manual_seed(random.Random(f"fresh-lora/{seed}/{server_round}").getrandbits(63))
    out = {}
    for key in sorted(adapter):
        tensor = adapter[key]
        if is_a(key):
            draw = torch.empty(tensor.shape, dtype=torch.float32)
            torch.nn.init.kaiming_uniform_(draw, a=math.sqrt(5), generator=generator)
            out[key] = draw.to(tensor.dtype)
        elif is_b(key):
            out[key] = torch.zeros_like(tensor)
        else:
            out[key] = tensor.clone()
    return {key: out[key] for key in adapter}


@register
class FLoRA(Aggregator):
    """Merge the clients' exact mean product into M; a fresh LoRA each round."""

    name = "flora"
    merges_into_base = True
    supports_client_ranks = True
    fresh_factors = True

    def __init__(self, *, seed: int = 0) -> None:
        """``seed``: the run's ``--seed``, from which every round's fresh A is drawn."""
        self.seed = seed

    def aggregate(self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int) -> StateDict:
        """M + Σ_k p_k B_k A_k, and a fresh LoRA."""
        adapter, merged = merged_or_zero(global_params)
        check_lora_updates(adapter, updates, sent_keys(self, adapter, server_round), self.supports_client_ranks)
        products = weighted_products(adapter, updates, example_weights(updates))
        new_merged = {key: (merged[key].float() + products[key]).to(merged[key].dtype) for key in merged}
        return {**fresh_lora(adapter, self.seed, server_round), **new_merged}
