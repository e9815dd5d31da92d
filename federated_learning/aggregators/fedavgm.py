"""FedAvgM (Hsu, Qi and Brown, 2019, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", arXiv:1909.06335): FedAvg with server momentum.

Paper form (default), with beta = ``--server_momentum``, eta_s = ``--server_lr``, v_0 = 0:

    Δ̄ = Σ_i n_i (y_i - x) / Σ_i n_i,     v <- beta * v + Δ̄,     x <- x + eta_s * v

(with beta = 0 and eta_s = 1 this is FedAvg).

``--fedopt_variant openfedllm`` reproduces OpenFedLLM: an exponential moving average of Δ̄ with
beta = ``--fedopt_beta1`` (it has no ``server_momentum``), the first aggregation taking v = Δ̄,
and no server learning rate:

    v <- Δ̄ on the first round, else beta1 * v + (1 - beta1) * Δ̄;     x <- x + v

Deliberate differences (both variants): arithmetic in float32, the adapter keeping its dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from federated_learning.aggregators.base import Aggregator
from federated_learning.aggregators.pseudo_gradient import (
    apply_step,
    check_same_keys,
    clone_state,
    mean_delta,
)
from federated_learning.aggregators.registry import register
from federated_learning.types import ClientUpdate, StateDict


@register
class FedAvgM(Aggregator):
    """Server momentum over the weighted mean client delta."""

    name = "fedavgm"

    def __init__(self, **hyperparameters: Any) -> None:
        """Read ``server_momentum``/``server_lr`` (paper) or ``fedopt_beta1`` (openfedllm)."""
        super().__init__(**hyperparameters)
        self.openfedllm = self.variant() == "openfedllm"
        if self.openfedllm:
            flag, self.server_lr = "--fedopt_beta1", 1.0
            self.momentum = float(self.hparam("fedopt_beta1"))
        else:
            flag, self.server_lr = "--server_momentum", float(self.hparam("server_lr"))
            self.momentum = float(self.hparam("server_momentum"))
        if not 0 <= self.momentum < 1:
            raise ValueError(f"{flag} must be in [0, 1), got {self.momentum}")
        if not self.server_lr > 0:
            raise ValueError(f"--server_lr must be > 0, got {self.server_lr}")
        self.steps = 0
        self.v: StateDict | None = None

    @torch.no_grad()
    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """v <- beta v + Δ̄ (openfedllm: EMA), x <- x + eta_s v."""
        delta = mean_delta(global_params, updates, weighted=True)
        if self.v is not None:
            check_same_keys(self.v, global_params, "momentum v")
        if self.openfedllm:
            if self.steps == 0 or self.v is None:
                new_v = delta
            else:
                new_v = {k: self.momentum * self.v[k] + (1 - self.momentum) * d for k, d in delta.items()}
        elif self.v is None:
            new_v = delta  # beta * 0 + Δ̄
        else:
            new_v = {k: self.momentum * self.v[k] + d for k, d in delta.items()}
        self.v = new_v
        self.steps += 1
        return apply_step(global_params, new_v, self.server_lr)

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
