"""Ditto (Li, Hu, Beirami, Smith, ICML 2021, "Ditto: Fair and Robust Federated Learning Through Personalization").

Each client k keeps a personal adapter v_k besides the global one w, and solves

    min_{v_k}  F_k(v_k) + λ/2 ||v_k - w^t||^2        (``--ditto_lambda`` λ)

in every round it is sampled, where w^t is the global adapter it received. Algorithm 1 of the paper,
per sampled client and round: (1) the global pass, FedAvg's local training from w^t, whose result
is sent and averaged, w^{t+1} = Σ_k p_k w_k (p_k = n_k / Σ n_j); (2) the personal pass, local steps
on v_k with the gradient of the objective above. v_k starts from w^t the first time k is sampled and
never leaves the client. The personal model is what ``--eval_per_client`` scores as
``personal_eval``; the round evaluation scores w.

Implementation of the personal pass: each local optimizer step on F_k is followed by the proximal
step of the penalty, the exact minimiser of λ/2 ||v - w^t||^2 + 1/(2η) ||v - v'||^2:

    v <- (v' + ηλ w^t) / (1 + ηλ),     η the step's learning rate, v' the optimizer's result,

i.e. proximal gradient descent on the same objective (Ditto's paper takes the plain gradient step
η(∇F_k + λ(v - w^t))). Deliberate difference: with AdamW, the default local optimizer, a penalty
gradient inside Adam would be rescaled by Adam's normalisation and λ would lose its meaning; the
proximal step keeps it exact at both ends: λ = 0 is local training of v_k alone, λ -> ∞ keeps
v_k = w^t. The personal pass trains on the round's own rows with the global pass's seed (the paper
samples its batches separately), so with λ = 0 a client's personal model is exactly its local-only
training (``local<K>``).
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


class DittoProximalStep(ClientHook):
    """After each optimizer step: v <- (v + ηλ w^t) / (1 + ηλ) on every trainable parameter."""

    def __init__(self, lam: float, global_params: StateDict, trainable: Mapping[str, torch.nn.Parameter]) -> None:
        """``global_params``: w^t, the round's start; ``trainable``: the live personal adapter."""
        self.lam = lam
        self.trainable = dict(trainable)
        self.global_params = global_params

    @torch.no_grad()
    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Apply the penalty's proximal step with each parameter's learning rate of this step."""
        optimizer = kwargs.get("optimizer")
        if optimizer is None:
            raise RuntimeError("the Ditto hook needs the optimizer (transformers passes optimizer= to callbacks)")
        lr = {id(p): float(group["lr"]) for group in optimizer.param_groups for p in group["params"]}
        for key, param in self.trainable.items():
            step = lr.get(id(param), 0.0) * self.lam
            if not step:
                continue
            anchor = self.global_params[key].to(device=param.device, dtype=torch.float32)
            pulled = param.detach().float().add_(anchor, alpha=step).div_(1 + step)
            param.copy_(pulled.to(param.dtype))


class DittoClient(ClientAlgorithm):
    """Sends its global pass, keeps its personal adapter, trained with the proximal step."""

    personal_model = True

    def __init__(self, *, ditto_lambda: float = FedArguments.ditto_lambda) -> None:
        """``ditto_lambda`` >= 0: 0 trains the personal adapter alone, large values hold it at the global one."""
        check_hyperparameters(ditto_lambda=ditto_lambda)
        self.lam = float(ditto_lambda)

    def personal_hooks(self, global_params: StateDict, trainable: Mapping[str, torch.nn.Parameter]) -> list[ClientHook]:
        """The proximal step, or none when λ = 0."""
        return [DittoProximalStep(self.lam, global_params, trainable)] if self.lam > 0 else []


@register
class Ditto(FedAvg):
    """FedAvg of the global passes; every client's personal adapter is its own."""

    name = "ditto"
    client_class = DittoClient
    supports_client_ranks = False
