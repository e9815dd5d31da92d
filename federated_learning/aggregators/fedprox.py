"""FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks", MLSys).

Client k minimises its local loss plus a proximal term over its trainable (adapter) parameters:

    h_k(w) = F_k(w) + mu/2 * ||w - w_t||^2,    so each local step uses   g = ∇F_k(w) + mu * (w - w_t)

where w_t is the global adapter the round started from (``--prox_mu``). The server does FedAvg.

Implementation: the proximal gradient mu * (w - w_t) is added to each trainable parameter's
``.grad`` in ``on_pre_optimizer_step``, i.e. once per optimizer step, after gradient accumulation
(whose micro-batch losses are already averaged) -- the same gradient as adding the penalty to the
loss, without touching the trainer's loss code. With mu = 0 no hook is installed, so FedProx then
trains exactly like FedAvg.

Deliberate differences:
- The proximal gradient is added *after* gradient clipping (``--max_grad_norm``), so the penalty
  keeps its full strength (the paper has no clipping). OpenFedLLM adds mu/2*||w - w_t||^2 to the
  loss, so its proximal gradient is clipped together with the data gradient; the two agree
  whenever the gradient norm stays below ``--max_grad_norm`` or clipping is off (0).
- The difference w - w_t is computed in float32 even for bf16 adapters.
- ``--fedopt_variant`` does not apply: OpenFedLLM's FedProx is this one up to the clipping above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from config import FedArguments
from federated_learning.aggregators._base import ClientAlgorithm, ClientHook
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._registry import register
from federated_learning.aggregators.fedavg import FedAvg
from federated_learning.types import StateDict


class FedProxHook(ClientHook):
    """Adds mu * (w - w_t) to every trainable parameter's gradient before each optimizer step."""

    def __init__(self, mu: float, global_params: StateDict, trainable: Mapping[str, torch.nn.Parameter]) -> None:
        """Keep the round's anchor w_t; it is moved to each parameter's device on first use."""
        self.mu = mu
        self.trainable = dict(trainable)
        self.global_params = global_params
        self._anchors: dict[str, torch.Tensor] = {}

    def _anchor(self, key: str, param: torch.nn.Parameter) -> torch.Tensor:
        # Cached float32 copy on the parameter's device: built once per round, not per step.
        if key not in self._anchors:
            self._anchors[key] = self.global_params[key].to(device=param.device, dtype=torch.float32, copy=True)
        return self._anchors[key]

    @torch.no_grad()
    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Add the proximal gradient to each trainable parameter's (accumulated, clipped) gradient."""
        if self.mu == 0:
            return
        for key, param in self.trainable.items():
            prox = (param.detach().float() - self._anchor(key, param)).mul_(self.mu)
            if param.grad is None:
                param.grad = prox.to(param.dtype)
            else:
                param.grad.add_(prox.to(param.grad.dtype))


class FedProxClient(ClientAlgorithm):
    """FedProx's client side: the proximal hook."""

    def __init__(self, *, prox_mu: float = FedArguments.prox_mu) -> None:
        """``prox_mu`` >= 0; with 0 no hook is installed and local training is exactly FedAvg's."""
        check_hyperparameters(prox_mu=prox_mu)
        self.mu = float(prox_mu)

    def hooks(
        self,
        payload: Mapping[str, StateDict],
        global_params: StateDict,
        trainable: Mapping[str, torch.nn.Parameter],
        lora_rank: int = 0,
    ) -> list[ClientHook]:
        """The proximal hook, or none when mu = 0."""
        return [FedProxHook(self.mu, global_params, trainable)] if self.mu > 0 else []


@register
class FedProx(FedAvg):
    """FedAvg on the server; clients add the proximal gradient mu * (w - w_t)."""

    name = "fedprox"
    client_class = FedProxClient
