"""FedOpt: the shared stage of FedAdagrad, FedYogi and FedAdam (Reddi et al., 2021, "Adaptive
Federated Optimization", ICLR, Algorithm 2).

Every round the server forms the pseudo-gradient once and takes one adaptive step:

    Δ̄ = Σ_i n_i (y_i - x) / Σ_i n_i                         (n_i = num_examples)
    m <- beta1 * m + (1 - beta1) * Δ̄
    v <- rule(v, Δ̄²)                                        (each subclass: ``second_moment``)
    x <- x + eta * m / (sqrt(v) + tau)

with m_0 = 0, v_0 = tau², no bias correction, eta = ``--fedopt_eta``, tau = ``--fedopt_tau``,
beta1 = ``--fedopt_beta1``, beta2 = ``--fedopt_beta2``. OpenFedLLM's variants of the three
(``--fedopt_variant openfedllm``) are their own classes in ``_openfedllm.py``.

Deliberate differences: arithmetic and moments in float32 whatever the adapter dtype; the adapter
keeps its dtype. Moments are allocated at the first aggregation, shaped like the global adapter.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from config import FedArguments
from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._pseudo_gradient import (
    apply_step,
    check_same_keys,
    clone_state,
    mean_delta,
    zeros_like_state,
)
from federated_learning.types import ClientUpdate, StateDict


class FedOpt(Aggregator):
    """Adaptive server optimizer over the pseudo-gradient; subclasses define the second moment."""

    weighted: ClassVar[bool] = True  # Δ̄ weighted by num_examples (False: the plain mean over clients)

    def __init__(
        self,
        *,
        fedopt_eta: float = FedArguments.fedopt_eta,
        fedopt_tau: float = FedArguments.fedopt_tau,
        fedopt_beta1: float = FedArguments.fedopt_beta1,
        fedopt_beta2: float = FedArguments.fedopt_beta2,
    ) -> None:
        """Server step eta > 0, adaptivity tau > 0, moment decays beta1, beta2 in [0, 1)."""
        check_hyperparameters(fedopt_eta=fedopt_eta, fedopt_tau=fedopt_tau, fedopt_beta1=fedopt_beta1,
                              fedopt_beta2=fedopt_beta2)
        self.eta = float(fedopt_eta)
        self.tau = float(fedopt_tau)
        self.beta1 = float(fedopt_beta1)
        self.beta2 = float(fedopt_beta2)
        self.steps = 0
        self.m: StateDict | None = None
        self.v: StateDict | None = None

    @abstractmethod
    def second_moment(self, v: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        """Return the new v from the old v and the squared update."""

    def first_moment(self, m: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Return the new m: beta1 * m + (1 - beta1) * Δ̄."""
        return self.beta1 * m + (1 - self.beta1) * delta

    def squared_update(self, delta: torch.Tensor, new_m: torch.Tensor) -> torch.Tensor:
        """What the second moment accumulates: Δ̄²."""
        return delta.square()

    @torch.no_grad()
    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """One adaptive server step from the pseudo-gradient of this round's clients."""
        delta = mean_delta(global_params, updates, weighted=self.weighted)
        if self.m is None or self.v is None:
            self.m, self.v = zeros_like_state(global_params), zeros_like_state(global_params, self.tau**2)
        check_same_keys(self.m, global_params, "first moment m")
        check_same_keys(self.v, global_params, "second moment v")
        new_m, new_v, step = {}, {}, {}
        for key, d in delta.items():
            new_m[key] = self.first_moment(self.m[key], d)
            new_v[key] = self.second_moment(self.v[key], self.squared_update(d, new_m[key]))
            step[key] = self.eta * new_m[key] / (new_v[key].sqrt() + self.tau)
        self.m, self.v = new_m, new_v
        self.steps += 1
        return apply_step(global_params, step)

    def state_dict(self) -> dict[str, Any]:
        """{"steps": rounds aggregated, "m": {key: tensor}, "v": {key: tensor}} (moments once allocated)."""
        state: dict[str, Any] = {"steps": self.steps}
        if self.m is not None and self.v is not None:
            state["m"], state["v"] = self.m, self.v
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the moments (copied, float32) and the round counter."""
        self.steps = int(state.get("steps", 0))
        self.m = clone_state(state["m"]) if "m" in state else None
        self.v = clone_state(state["v"]) if "v" in state else None
