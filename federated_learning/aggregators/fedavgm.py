"""FedAvgM (Hsu, Qi and Brown, 2019, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", arXiv:1909.06335): FedAvg with server momentum.

With beta = ``--server_momentum``, eta_s = ``--server_lr``, v_0 = 0:

    Δ̄ = Σ_i n_i (y_i - x) / Σ_i n_i,     v <- beta * v + Δ̄,     x <- x + eta_s * v

(with beta = 0 and eta_s = 1 this is FedAvg). ``--fedopt_variant openfedllm`` runs OpenFedLLM's
exponential moving average instead (``_openfedllm.OpenFedLLMFedAvgM``).

Deliberate differences: arithmetic in float32, the adapter keeping its dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from config import FedArguments
from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._pseudo_gradient import apply_step, check_same_keys, clone_state, mean_delta
from federated_learning.aggregators._registry import register
from federated_learning.types import ClientUpdate, StateDict


@register
class FedAvgM(Aggregator):
    """Server momentum over the weighted mean client delta."""

    name = "fedavgm"

    def __init__(
        self, *, server_lr: float = FedArguments.server_lr, server_momentum: float = FedArguments.server_momentum
    ) -> None:
        """``server_lr`` (eta_s > 0) and ``server_momentum`` (beta in [0, 1))."""
        check_hyperparameters(server_lr=server_lr, server_momentum=server_momentum)
        self.server_lr = float(server_lr)
        self.momentum = float(server_momentum)
        self.steps = 0
        self.v: StateDict | None = None

    def next_momentum(self, delta: StateDict) -> StateDict:
        """v <- beta * v + Δ̄ (v_0 = 0)."""
        if self.v is None:
            return delta
        return {k: self.momentum * self.v[k] + d for k, d in delta.items()}

    @torch.no_grad()
    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """v <- next_momentum(Δ̄), x <- x + eta_s v."""
        delta = mean_delta(global_params, updates, weighted=True)
        if self.v is not None:
            check_same_keys(self.v, global_params, "momentum v")
        self.v = self.next_momentum(delta)
        self.steps += 1
        return apply_step(global_params, self.v, self.server_lr)

    def state_dict(self) -> dict[str, Any]:
        """{"steps": rounds aggregated, "v": {key: float32 tensor}} ("v" once allocated)."""
        state: dict[str, Any] = {"steps": self.steps}
        if self.v is not None:
            state["v"] = self.v
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the momentum and the round counter."""
        self.steps = int(state.get("steps", 0))
        self.v = clone_state(state["v"]) if "v" in state else None
