"""FedYogi (Reddi et al., 2021, "Adaptive Federated Optimization", ICLR, Algorithm 2).

    m <- beta1 * m + (1 - beta1) * Δ̄
    v <- v - (1 - beta2) * Δ̄² * sign(v - Δ̄²)
    x <- x + eta * m / (sqrt(v) + tau)

with m_0 = 0, v_0 = tau², no bias correction; the shared stage is ``_fedopt.FedOpt``.

``--fedopt_variant openfedllm``: OpenFedLLM's form, ``_openfedllm.OpenFedLLMFedYogi``.
"""

from __future__ import annotations

import torch

from federated_learning.aggregators._fedopt import FedOpt
from federated_learning.aggregators._registry import register


@register
class FedYogi(FedOpt):
    """Yogi on the server: v moves additively towards the squared update, by at most (1 - beta2) of it."""

    name = "fedyogi"

    def second_moment(self, v: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        """v - (1 - beta2) * Δ̄² * sign(v - Δ̄²)."""
        return v - (1 - self.beta2) * square * torch.sign(v - square)
