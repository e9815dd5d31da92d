"""FedAdagrad (Reddi et al., 2021, "Adaptive Federated Optimization", ICLR, Algorithm 2).

    m <- beta1 * m + (1 - beta1) * Δ̄,   v <- v + Δ̄²,   x <- x + eta * m / (sqrt(v) + tau)

with m_0 = 0, v_0 = tau², no bias correction; the shared stage is ``_fedopt.FedOpt``.

``--fedopt_variant openfedllm``: OpenFedLLM's form, ``_openfedllm.OpenFedLLMFedAdagrad``.
"""

from __future__ import annotations

import torch

from federated_learning.aggregators._fedopt import FedOpt
from federated_learning.aggregators._registry import register


@register
class FedAdagrad(FedOpt):
    """Adagrad on the server: the second moment accumulates every squared update."""

    name = "fedadagrad"

    def second_moment(self, v: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        """v + Δ̄²."""
        return v + square
