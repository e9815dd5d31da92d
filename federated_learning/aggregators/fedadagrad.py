"""FedAdagrad (Reddi et al., 2021, "Adaptive Federated Optimization", ICLR, Algorithm 2).

    m <- beta1 * m + (1 - beta1) * Δ̄,   v <- v + Δ̄²,   x <- x + eta * m / (sqrt(v) + tau)

with m_0 = 0, v_0 = tau², no bias correction; the shared stage is ``fedopt.FedOpt``.

``--fedopt_variant openfedllm``: no momentum (m = Δ̄ every round, as in OpenFedLLM, whose comment
says the paper uses none -- Algorithm 2 does use beta1), Δ̄ unweighted, v <- v + m² (= Δ̄²).
OpenFedLLM could not run it at all: its client dispatch spelled the name "fedadgrad".
"""

from __future__ import annotations

import torch

from federated_learning.aggregators.fedopt import FedOpt
from federated_learning.aggregators.registry import register


@register
class FedAdagrad(FedOpt):
    """Adagrad on the server: the second moment accumulates every squared update."""

    name = "fedadagrad"

    def first_moment(self, m: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Paper: beta1-momentum; openfedllm: m = Δ̄ (no momentum)."""
        return delta if self.openfedllm else super().first_moment(m, delta)

    def second_moment(self, v: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        """v + Δ̄²."""
        return v + square
