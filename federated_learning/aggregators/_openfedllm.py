"""OpenFedLLM's own variants of FedAvgM, the FedOpt family and SCAFFOLD (``--fedopt_variant openfedllm``).

They reproduce the update rules of OpenFedLLM (Ye et al., KDD 2024, its ``federated_learning/``
code) so that its published tables can be rerun; the papers' rules are the default classes. Each
variant is registered under the paper algorithm's ``--fed_alg`` name with ``variant = "openfedllm"``.
FedAvg and FedProx have no variant: OpenFedLLM's are the papers' (FedProx up to the gradient
clipping its ``fedprox.py`` docstring describes).

- FedAvgM: an exponential moving average of Δ̄ with beta = ``--fedopt_beta1`` (it has no
  ``server_momentum``), the first aggregation taking v = Δ̄, and no server learning rate:
  v <- Δ̄ on the first round, else beta1 * v + (1 - beta1) * Δ̄;  x <- x + v.
- FedAdam / FedYogi / FedAdagrad: Δ̄ is the unweighted mean of the client deltas; the first
  aggregation sets m = Δ̄ (no (1 - beta1) damping); v is updated from m² instead of Δ̄². FedAdagrad
  uses no momentum at all (m = Δ̄ every round; OpenFedLLM's comment says the paper uses none --
  Algorithm 2 does use beta1), so its v <- v + m² is v + Δ̄². OpenFedLLM could not run FedAdagrad:
  its client dispatch spelled the name "fedadgrad".
- SCAFFOLD: the client applies the correction to the parameters after each optimizer step
  (w <- w - eta_l * (c - c_i)), which equals the gradient form for plain SGD but not for AdamW, and
  c_i+ comes from the drift, (x - y_i) / (K eta_l); the server ignores ``--server_lr``
  (x <- weighted mean).

Arithmetic runs in float32 as in the paper classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from config import FedArguments
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._registry import register
from federated_learning.aggregators.fedadagrad import FedAdagrad
from federated_learning.aggregators.fedadam import FedAdam
from federated_learning.aggregators.fedavgm import FedAvgM
from federated_learning.aggregators.fedyogi import FedYogi
from federated_learning.aggregators.scaffold import Scaffold, ScaffoldClient, ScaffoldHook
from federated_learning.state import weighted_average
from federated_learning.types import ClientUpdate, StateDict

VARIANT = "openfedllm"


@register
class OpenFedLLMFedAvgM(FedAvgM):
    """OpenFedLLM's server momentum: an EMA of Δ̄ with beta1, no server learning rate."""

    variant = VARIANT

    def __init__(self, *, fedopt_beta1: float = FedArguments.fedopt_beta1) -> None:
        """``fedopt_beta1`` in [0, 1) is the EMA's decay."""
        check_hyperparameters(fedopt_beta1=fedopt_beta1)
        super().__init__(server_lr=1.0, server_momentum=fedopt_beta1)

    def next_momentum(self, delta: StateDict) -> StateDict:
        """v <- Δ̄ at the first aggregation, else beta1 * v + (1 - beta1) * Δ̄."""
        if self.steps == 0 or self.v is None:
            return delta
        return {k: self.momentum * self.v[k] + (1 - self.momentum) * d for k, d in delta.items()}


class _OpenFedLLMFedOpt:
    """What OpenFedLLM's FedAdam and FedYogi change in FedOpt: unweighted Δ̄, m = Δ̄ first, v from m²."""

    variant = VARIANT
    weighted = False
    steps: int
    beta1: float

    def first_moment(self, m: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """m = Δ̄ at the first aggregation, then beta1 * m + (1 - beta1) * Δ̄."""
        if self.steps == 0:
            return delta
        return self.beta1 * m + (1 - self.beta1) * delta

    def squared_update(self, delta: torch.Tensor, new_m: torch.Tensor) -> torch.Tensor:
        """m² in place of Δ̄²."""
        return new_m.square()


@register
class OpenFedLLMFedAdam(_OpenFedLLMFedOpt, FedAdam):
    """FedAdam as OpenFedLLM runs it."""


@register
class OpenFedLLMFedYogi(_OpenFedLLMFedOpt, FedYogi):
    """FedYogi as OpenFedLLM runs it."""


@register
class OpenFedLLMFedAdagrad(_OpenFedLLMFedOpt, FedAdagrad):
    """FedAdagrad as OpenFedLLM runs it: no momentum, so m = Δ̄ and v <- v + Δ̄²."""

    def first_moment(self, m: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """m = Δ̄ every round."""
        return delta


class OpenFedLLMScaffoldHook(ScaffoldHook):
    """OpenFedLLM's SCAFFOLD client: the correction after each optimizer step, c_i+ from the drift."""

    @torch.no_grad()
    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Only record this step's learning rates (the gradient is left as the data made it)."""
        self._record_learning_rates(kwargs.get("optimizer"))

    @torch.no_grad()
    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """w <- w - eta_l * (c - c_i) after the optimizer step."""
        for key, param in self.trainable.items():
            param.sub_((self._correction(key, param) * self._last_lr[key]).to(param.dtype))

    def delta_c(self, key: str, param: torch.nn.Parameter) -> torch.Tensor:
        """Δc_i = (x - y_i) / (K eta_l) - c."""
        drift = self.global_params[key].float() - param.detach().to("cpu", torch.float32)
        return drift / self.lr_sums[key] - self._variate(self.c, key)


class OpenFedLLMScaffoldClient(ScaffoldClient):
    """OpenFedLLM's SCAFFOLD client side."""

    hook_class = OpenFedLLMScaffoldHook


@register
class OpenFedLLMScaffold(Scaffold):
    """OpenFedLLM's SCAFFOLD server: the weighted mean whatever ``--server_lr`` says."""

    variant = VARIANT
    client_class = OpenFedLLMScaffoldClient

    def new_global(self, global_params: StateDict, updates: Sequence[ClientUpdate]) -> StateDict:
        """The weighted mean of the client adapters."""
        return weighted_average([u.params for u in updates], [u.num_examples for u in updates])
