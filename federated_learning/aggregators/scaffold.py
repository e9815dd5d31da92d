"""SCAFFOLD (Karimireddy et al., 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML), option II.

Client i, starting from the global adapter x with server control variate c and its own c_i, takes
K local steps y_i <- y_i - eta_l * (g_i(y_i) + c - c_i), then

    c_i+ = c_i - c + (x - y_i) / (K * eta_l)         and sends   Δc_i = c_i+ - c_i.

With plain SGD, (x - y_i) / (K eta_l) is the mean corrected gradient, mean_k g_i(y_k) + c - c_i, so
c_i+ is exactly the mean of the client's own (uncorrected) gradients over its local steps. The
client computes it in that form, as the learning-rate-weighted mean Σ_k eta_k g_k / Σ_k eta_k of
the gradients the optimizer received (after clipping, before the correction): the same number as
the drift form under SGD with any schedule, and still a gradient, in the units of the correction,
when the local optimizer is AdamW. The drift form divides an Adam displacement (about eta_l per
coordinate and step, whatever the gradient's size) by K eta_l, so its control variates have the
size of a normalised step, orders of magnitude above the LoRA gradients they are meant to
correct; the correction then swamps the loss.

Server, with S the clients of the round, N = ``num_clients`` and eta_g = ``--server_lr``:

    x <- x + eta_g * Δ̄      (Δ̄ = Σ_i n_i (y_i - x) / Σ_i n_i, n_i = num_examples)
    c <- c + (1/N) * Σ_{i in S} Δc_i,       c_i <- c_i + Δc_i  for i in S.

K * eta_l is taken as the sum of the learning rates the optimizer actually used over the round's
optimizer steps (read from its param groups, per parameter), which is K * eta_l for a constant
rate and stays right under warm-up or decay. The correction (c - c_i) is added to the gradient in
``on_pre_optimizer_step``: after gradient accumulation and clipping, before the optimizer step.

Server state: c, and c_i only for clients that were ever sampled (zeros until then). In the
single-process simulation the server keeps the c_i and sends each to its client in
``client_payload`` ({"c": ..., "c_i": ...}; an absent entry means zeros).

SCAFFOLD is derived for plain SGD local steps (``--optim sgd``, no momentum, ``--weight_decay 0``
runs it exactly). With AdamW (the default local optimizer) the corrected gradient is rescaled by
Adam's preconditioner; the control variates stay in gradient units (see above), and the fixed
point of the federation is still the global optimum, where every corrected gradient vanishes.
With ``--server_lr 1`` the new global adapter is exactly FedAvg's weighted mean.

``--fedopt_variant openfedllm`` runs OpenFedLLM's client and server (``_openfedllm.OpenFedLLMScaffold``).
Other deliberate differences: K * eta_l is the sum of the learning rates the optimizer used (read
from its param groups, per parameter) where OpenFedLLM divides by max_steps * learning_rate (equal
under its constant schedule); c_i is allocated only for sampled clients (OpenFedLLM: all N, same
values); server arithmetic in float32; a fp16 step skipped by the loss scaler still counts in
K * eta_l.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from config import FedArguments
from federated_learning.aggregators._base import Aggregator, ClientAlgorithm, ClientHook
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._pseudo_gradient import (
    apply_step,
    check_same_keys,
    check_updates,
    clone_state,
    mean_delta,
    zeros_like_state,
)
from federated_learning.aggregators._registry import register
from federated_learning.state import weighted_average
from federated_learning.types import ClientUpdate, StateDict

logger = logging.getLogger(__name__)

DELTA_C = "delta_c"
"""Key of the control-variate delta in ``ClientUpdate.extras``."""


class ScaffoldHook(ClientHook):
    """Client side of SCAFFOLD for one client-round: corrects the gradients, then reports Δc_i."""

    def __init__(
        self,
        payload: Mapping[str, StateDict],
        global_params: StateDict,
        trainable: Mapping[str, torch.nn.Parameter],
    ) -> None:
        """``payload`` holds "c" and "c_i" (absent: zeros)."""
        self.trainable = dict(trainable)
        self.global_params = global_params
        self.c = payload.get("c")
        self.c_i = payload.get("c_i")
        self.steps = 0
        self.lr_sums = dict.fromkeys(self.trainable, 0.0)
        self._last_lr = dict.fromkeys(self.trainable, 0.0)
        self._corrections: dict[str, torch.Tensor] = {}
        self._grad_sums: dict[str, torch.Tensor] = {}  # Σ_k eta_k g_k, float32
        self._extras: dict[str, StateDict] | None = None

    def _correction(self, key: str, param: torch.nn.Parameter) -> torch.Tensor:
        # (c - c_i) in float32 on the parameter's device, built once per round, never per step.
        if key not in self._corrections:
            corr = torch.zeros(param.shape, dtype=torch.float32)
            if self.c is not None:
                corr += self.c[key].float()
            if self.c_i is not None:
                corr -= self.c_i[key].float()
            self._corrections[key] = corr.to(param.device)
        return self._corrections[key]

    def _variate(self, which: StateDict | None, key: str) -> torch.Tensor:
        """c[key] or c_i[key] in float32 on the CPU (zeros when not allocated yet)."""
        if which is None:
            return torch.zeros(self.trainable[key].shape, dtype=torch.float32)
        return which[key].float()

    def _record_learning_rates(self, optimizer: Any) -> None:
        """Add this step's per-parameter learning rates to K * eta_l."""
        if optimizer is None:
            raise RuntimeError("the SCAFFOLD hook needs the optimizer (transformers passes optimizer= to callbacks)")
        by_param = {id(p): float(group["lr"]) for group in optimizer.param_groups for p in group["params"]}
        self.steps += 1
        for key, param in self.trainable.items():
            # A parameter the optimizer does not hold is never updated: it takes no step (lr 0).
            lr = by_param.get(id(param), 0.0)
            self.lr_sums[key] += lr
            self._last_lr[key] = lr

    @torch.no_grad()
    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record this step's learning rates, add eta_k g_k to Σ, then (c - c_i) to g."""
        self._record_learning_rates(kwargs.get("optimizer"))
        for key, param in self.trainable.items():
            if param.grad is not None:
                if key not in self._grad_sums:
                    self._grad_sums[key] = torch.zeros(param.shape, dtype=torch.float32, device=param.device)
                self._grad_sums[key].add_(param.grad.float(), alpha=self._last_lr[key])
            corr = self._correction(key, param)
            if param.grad is None:
                param.grad = corr.to(param.dtype)
            else:
                param.grad.add_(corr.to(param.grad.dtype))

    def delta_c(self, key: str, param: torch.nn.Parameter) -> torch.Tensor:
        """Δc_i = c_i+ - c_i for one parameter, c_i+ the lr-weighted mean of its uncorrected gradients."""
        grad_sum = self._grad_sums.get(key)
        c_i = self._variate(self.c_i, key)
        mean_grad = (grad_sum.cpu() / self.lr_sums[key]) if grad_sum is not None else torch.zeros_like(c_i)
        return mean_grad - c_i

    @torch.no_grad()
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Compute Δc_i of every parameter once local training has ended."""
        delta = {}
        for key, param in self.trainable.items():
            if self.lr_sums[key] <= 0:
                # No step was taken: c_i+ is undefined, so the client's variate is left as it was.
                logger.warning("SCAFFOLD: %s took no optimizer step this round; its control variate is kept", key)
                delta[key] = torch.zeros(param.shape, dtype=torch.float32)
            else:
                delta[key] = self.delta_c(key, param)
        self._extras = {DELTA_C: delta}

    def extras(self) -> dict[str, StateDict]:
        """{"delta_c": c_i+ - c_i} (float32, on CPU), available once training has ended."""
        if self._extras is None:
            raise RuntimeError("SCAFFOLD extras are computed at on_train_end; local training has not ended")
        return self._extras


class ScaffoldClient(ClientAlgorithm):
    """SCAFFOLD's client side: one correction hook per client-round."""

    hook_class: type[ScaffoldHook] = ScaffoldHook

    def hooks(
        self,
        payload: Mapping[str, StateDict],
        global_params: StateDict,
        trainable: Mapping[str, torch.nn.Parameter],
        lora_rank: int = 0,
    ) -> list[ClientHook]:
        """The correction hook, from the payload's c and c_i."""
        return [self.hook_class(payload, global_params, trainable)]


@register
class Scaffold(Aggregator):
    """SCAFFOLD server: FedAvg step scaled by ``server_lr``, plus control-variate bookkeeping."""

    name = "scaffold"
    client_class = ScaffoldClient
    required_extras = (DELTA_C,)

    def __init__(self, *, num_clients: int | None = None, server_lr: float = FedArguments.server_lr) -> None:
        """``num_clients`` (N, every client, sampled or not; required) and ``server_lr`` (eta_g > 0)."""
        if num_clients is None:
            raise ValueError("scaffold needs num_clients (N: all clients, sampled or not), e.g. --num_clients 10")
        check_hyperparameters(num_clients=num_clients, server_lr=server_lr)
        self.num_clients = int(num_clients)
        self.server_lr = float(server_lr)
        self.c: StateDict | None = None
        self.c_i: dict[int, StateDict] = {}

    def client_payload(self, client_id: int) -> dict[str, StateDict]:
        """{"c": c, "c_i": c_i} where allocated (absent entries are zeros). Do not mutate."""
        payload = {}
        if self.c is not None:
            payload["c"] = self.c
        if client_id in self.c_i:
            payload["c_i"] = self.c_i[client_id]
        return payload

    def new_global(self, global_params: StateDict, updates: Sequence[ClientUpdate]) -> StateDict:
        """x + eta_g * Δ̄; with eta_g = 1 exactly FedAvg's weighted mean (x + 1 * (ȳ - x) is ȳ), bit for bit."""
        if self.server_lr == 1.0:
            return weighted_average([u.params for u in updates], [u.num_examples for u in updates])
        return apply_step(global_params, mean_delta(global_params, updates), self.server_lr)

    @torch.no_grad()
    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """x <- x + eta_g * Δ̄;  c <- c + (1/N) Σ Δc_i;  c_i <- c_i + Δc_i."""
        check_updates(global_params, updates)
        if len(updates) > self.num_clients:
            raise ValueError(f"{len(updates)} clients trained but num_clients (N) is {self.num_clients}")
        for update in updates:
            if DELTA_C not in update.extras:
                raise ValueError(
                    f"client {update.client_id} sent no {DELTA_C!r}: did local training run the SCAFFOLD hook?"
                )
            check_same_keys(update.extras[DELTA_C], global_params, f"{DELTA_C} of client {update.client_id}")
        if self.c is not None:
            check_same_keys(self.c, global_params, "control variate c")

        new_global = self.new_global(global_params, updates)
        c = self.c if self.c is not None else zeros_like_state(global_params)
        new_c = {}
        for key, value in c.items():
            total = torch.zeros_like(value)
            for update in updates:
                total.add_(update.extras[DELTA_C][key].float())
            new_c[key] = value + total / self.num_clients
        for update in updates:
            old = self.c_i[update.client_id] if update.client_id in self.c_i else zeros_like_state(global_params)
            self.c_i[update.client_id] = {
                key: old[key] + update.extras[DELTA_C][key].float() for key in global_params
            }
        self.c = new_c
        return new_global

    def state_dict(self) -> dict[str, Any]:
        """{"c": {key: tensor}, "c_i": {"<client id>": {key: tensor}}}, each present once allocated."""
        state: dict[str, Any] = {}
        if self.c is not None:
            state["c"] = self.c
        if self.c_i:
            state["c_i"] = {str(cid): variate for cid, variate in sorted(self.c_i.items())}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore c and the c_i (copied, float32)."""
        self.c = clone_state(state["c"]) if "c" in state else None
        self.c_i = {int(cid): clone_state(variate) for cid, variate in state.get("c_i", {}).items()}
