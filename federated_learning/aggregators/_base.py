"""The algorithm interface: a server-side update rule (``Aggregator``) and its client side (``ClientAlgorithm``).

An aggregator never samples clients, logs or writes files. Its server part is ``aggregate``, plus
``client_payload``: what the server sends one client besides the global adapter (SCAFFOLD's control
variates). Its client part is a ``ClientAlgorithm`` (``Aggregator.client_class``) built from the
same flags, whose ``hooks`` are ``ClientHook``s: callbacks on local training's optimizer steps
(FedProx's proximal term, SCAFFOLD's correction), run inside the TRL trainer by
``federated_learning.client``, so the same hook serves SFT and DPO alike. The two halves meet
only through the payload and ``ClientUpdate.extras``, so the same classes run in one process and
on Flower, where server and clients live in different processes, and a client never builds a
server.

Constructors are keyword-only, their parameters the flag names, their defaults ``config.FedArguments``'s
(one place), their ranges ``_hyperparameters.RULES``'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from federated_learning.types import ClientUpdate, StateDict


class ClientHook:
    """An algorithm's client-side logic for one client and one round, called at local training's events.

    The methods take transformers' ``TrainerCallback`` arguments (``args, state, control`` and
    keyword arguments such as ``optimizer``); ``extras`` is read once training has ended, and
    whatever it returns travels to the server in ``ClientUpdate.extras``.
    """

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After gradient accumulation and clipping, before the optimizer steps."""

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Right after the optimizer stepped."""

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Once the client's local steps are done."""

    def extras(self) -> dict[str, StateDict]:
        """The state this hook sends back to the server (none by default)."""
        return {}


class ClientAlgorithm:
    """The client side of an algorithm: its hooks for one round of local training (none by default)."""

    def hooks(
        self,
        payload: Mapping[str, StateDict],
        global_params: StateDict,
        trainable: Mapping[str, torch.nn.Parameter],
    ) -> list[ClientHook]:
        """Hooks for one client-round; ``trainable`` maps each adapter key to its live parameter.

        ``payload`` is what the server's ``Aggregator.client_payload`` gave for this client.
        """
        return []


class Aggregator(ABC):
    """Base class of every federated algorithm's server side; subclasses register with ``@register``."""

    name: ClassVar[str]
    variant: ClassVar[str] = "paper"  # or "openfedllm": a reproduction of OpenFedLLM's own rule
    client_class: ClassVar[type[ClientAlgorithm]] = ClientAlgorithm
    required_extras: ClassVar[tuple[str, ...]] = ()  # ClientUpdate.extras every update must carry

    def client_payload(self, client_id: int) -> dict[str, StateDict]:
        """Extra state to send to ``client_id`` with the global adapter (none by default)."""
        return {}

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
