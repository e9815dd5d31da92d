"""The aggregator interface: one server-side update rule, plus optional client-side hooks.

An aggregator never samples clients, logs or writes files. Its server part is ``aggregate``; its
client part (FedProx's proximal term, SCAFFOLD's correction) is a ``ClientHook`` -- a
``transformers.TrainerCallback`` -- so the same hook serves SFT and DPO trainers alike.

The split between ``client_payload`` (server side: what the server sends to one client besides the
global adapter) and ``client_hooks`` (client side: built from that payload and this aggregator's
hyperparameters only) lets the same classes run in the single-process simulation and on Flower,
where server and client live in different processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from transformers import TrainerCallback

from federated_learning.types import ClientUpdate, StateDict

HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    "prox_mu": 0.01,
    "server_lr": 1.0,
    "server_momentum": 0.9,
    "fedopt_eta": 1e-3,
    "fedopt_tau": 1e-3,
    "fedopt_beta1": 0.9,
    "fedopt_beta2": 0.99,
    "fedopt_variant": "paper",
    "num_clients": None,
}
"""Defaults of the hyperparameters aggregators read, equal to ``config.FedArguments``'s (a test checks)."""

VARIANTS = ("paper", "openfedllm")
"""``--fedopt_variant`` values: the papers' update rules, or OpenFedLLM's own variants."""


class ClientHook(TrainerCallback):
    """A trainer callback carrying an algorithm's client-side logic for one client and one round.

    ``extras`` is read once local training has ended; whatever it returns travels to the server in
    ``ClientUpdate.extras`` (for example SCAFFOLD's control-variate delta).
    """

    def extras(self) -> dict[str, StateDict]:
        """Return the state this hook sends back to the server (none by default)."""
        return {}


class Aggregator(ABC):
    """Base class of every federated algorithm; subclasses register with ``@register``."""

    name: ClassVar[str]

    def __init__(self, **hyperparameters: Any) -> None:
        """Accept every CLI hyperparameter name; subclasses read the ones they use."""
        self.hyperparameters = hyperparameters

    def hparam(self, name: str) -> Any:
        """The hyperparameter ``name`` as given (CLI flag name), else its default; None counts as unset."""
        value = self.hyperparameters.get(name)
        return HYPERPARAMETER_DEFAULTS[name] if value is None else value

    def variant(self) -> str:
        """``fedopt_variant``, validated: "paper" or "openfedllm"."""
        value = str(self.hparam("fedopt_variant"))
        if value not in VARIANTS:
            raise ValueError(f"--fedopt_variant {value!r} is unknown; use one of: {', '.join(VARIANTS)}")
        return value

    def client_payload(self, client_id: int) -> dict[str, StateDict]:
        """Server side: extra state to send to ``client_id`` with the global adapter (none by default)."""
        return {}

    def client_hooks(
        self,
        payload: Mapping[str, StateDict],
        global_params: StateDict,
        trainable: Mapping[str, torch.nn.Parameter],
    ) -> list[ClientHook]:
        """Client side: trainer callbacks for one round of local training (none by default).

        ``trainable`` maps each adapter key of ``global_params`` to the live model parameter.
        """
        return []

    @abstractmethod
    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """Return the new global adapter; must not mutate ``global_params`` or ``updates``."""

    def state_dict(self) -> dict[str, Any]:
        """Server state needed to resume (momenta, control variates).

        Values are tensors, ints, floats, strings, or nested dicts (string keys) of the same; an
        entry not yet allocated (before the first round) is absent rather than empty.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned; an aggregator without server state accepts only {}."""
        if state:
            raise ValueError(f"{self.name} keeps no server state, but was given {sorted(state)}")
