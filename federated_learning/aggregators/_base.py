"""The algorithm interface: a server-side update rule (``Aggregator``) and its client side (``ClientAlgorithm``).

An aggregator never samples clients, logs or writes files. Its server part is ``aggregate``, plus
``client_start`` (the state a client starts its round from: the global adapter by default,
FlexLoRA's per-client SVD factors), ``client_rank`` (the LoRA rank it trains, see
``federated_learning.lora_ranks``) and ``client_payload``: what the server sends one client besides its
start state (SCAFFOLD's control variates). Its client part is a ``ClientAlgorithm`` (``Aggregator.client_class``)
built from the same flags: which adapter keys a client sends (``sent_keys``: FFA-LoRA sends only B),
keeps to itself (``personal_keys``: FedSA-LoRA's B) or leaves untrained (``frozen_keys``), and its
``hooks``, ``ClientHook``s: callbacks on local training's optimizer steps (FedProx's proximal term,
SCAFFOLD's correction), run inside the TRL trainer by ``federated_learning.client``, so the same hook
serves SFT and DPO alike. The two halves meet only through the start state, the payload, the
``RoundTask`` and the ``ClientUpdate``, so the same classes run in one process and on Flower, where
server and clients live in different processes, and a client never builds a server.

Constructors are keyword-only, their parameters the flag names, their defaults ``config.FedArguments``'s
(one place), their ranges ``_hyperparameters.RULES``'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from federated_learning.merged_delta import is_merged_key
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

    def metrics(self) -> dict[str, float]:
        """Numbers this hook adds to the client's metrics (none by default)."""
        return {}


class ClientAlgorithm:
    """The client side of an algorithm: what it trains, sends and keeps, and its hooks (defaults: FedAvg's)."""

    # Ditto: after training the global adapter (what it sends), each client trains its own copy of the adapter
    # in a second pass on the same rows (``personal_hooks``), kept from round to round and never sent.
    personal_model: ClassVar[bool] = False

    @staticmethod
    def sent_keys(server_round: int, keys: Iterable[str]) -> list[str]:
        """The adapter keys a client sends after ``server_round`` (0-based) of ``keys`` (default: all adapter weights).

        The server checks every update against the same answer, so this depends on nothing else.
        """
        return [key for key in keys if not is_merged_key(key)]

    def frozen_keys(self, server_round: int, keys: Iterable[str]) -> set[str]:
        """The adapter keys a client leaves untrained in ``server_round`` (none by default)."""
        return set()

    def personal_keys(self, keys: Iterable[str]) -> list[str]:
        """The adapter keys each client keeps for itself from round to round, never sent (none by default)."""
        return []

    def kept_keys(self, keys: Iterable[str]) -> list[str]:
        """The keys of what a client keeps between rounds: its ``personal_keys``, or with a ``personal_model`` every
        adapter weight."""
        return self.sent_keys(0, keys) if self.personal_model else self.personal_keys(keys)

    @classmethod
    def keeps_personal_state(cls) -> bool:
        """Whether this algorithm's clients keep state of their own (``personal_keys`` overridden, or a
        ``personal_model``)."""
        return cls.personal_model or cls.personal_keys is not ClientAlgorithm.personal_keys

    def personal_hooks(self, global_params: StateDict, trainable: Mapping[str, torch.nn.Parameter]) -> list[ClientHook]:
        """Hooks of the personal pass of a ``personal_model`` (``global_params``: the round's start state)."""
        return []

    def choose_start(
        self, start: StateDict, payload: Mapping[str, StateDict], loss_of: Callable[[StateDict], float],
        client_id: int, server_round: int, seed: int,
    ) -> tuple[StateDict, dict[str, float]]:
        """The state this client trains from this round, and metrics saying why (default: ``start``, none).

        ``loss_of(state)`` is the task's loss of ``state`` on the client's rows of this round (IFCA
        picks the cluster model with the lowest); ``seed`` the run's ``--seed``.
        """
        return start, {}

    def hooks(
        self,
        payload: Mapping[str, StateDict],
        global_params: StateDict,
        trainable: Mapping[str, torch.nn.Parameter],
        lora_rank: int = 0,
    ) -> list[ClientHook]:
        """Hooks for one client-round; ``trainable`` maps each adapter key to its live parameter.

        ``payload`` is what the server's ``Aggregator.client_payload`` gave for this client; ``global_params``
        its start state; ``lora_rank`` the rank it trains (0: the global adapter's).
        """
        return []


class Aggregator(ABC):
    """Base class of every federated algorithm's server side; subclasses register with ``@register``."""

    name: ClassVar[str]
    variant: ClassVar[str] = "paper"  # or "openfedllm": a reproduction of OpenFedLLM's own rule
    client_class: ClassVar[type[ClientAlgorithm]] = ClientAlgorithm
    required_extras: ClassVar[tuple[str, ...]] = ()  # ClientUpdate.extras every update must carry
    merges_into_base: ClassVar[bool] = False  # the model carries merged deltas (federated_learning.merged_delta)
    supports_client_ranks: ClassVar[bool] = False  # aggregates updates of lower rank (--client_lora_ranks)
    # Each round starts clients from factors it makes anew (FLoRA's fresh LoRA, FlexLoRA's SVD): a client's
    # error-feedback residual from the last round's factors means nothing in them (--upload_codec topk refused).
    fresh_factors: ClassVar[bool] = False
    personal_models: ClassVar[bool] = False  # the server keeps a model per client group (``client_model``)

    def client_start(self, client_id: int, server_round: int, global_params: StateDict) -> StateDict:
        """The state ``client_id`` starts ``server_round`` (0-based) from, keyed as ``global_params`` (default: it).

        A merged-delta key left out means a zero delta. The round loop then cuts it to the
        client's rank (``client_rank``), and checks the client's update against that start.
        """
        return global_params

    def client_rank(self, client_id: int, rank: int) -> int:
        """The LoRA rank ``client_id`` trains this round, given its ``--client_lora_ranks`` entry (0: the
        global adapter's rank). Default: that entry; HetLoRA's clients prune theirs."""
        return rank

    def client_payload(self, client_id: int) -> dict[str, StateDict]:
        """Extra state to send to ``client_id`` with its start state (none by default)."""
        return {}

    def reply_start(self, update: ClientUpdate, start: StateDict) -> StateDict | str:
        """The state ``update`` was trained from, which the server checks it against (default: the ``start`` it
        was sent), or why the reply is refused (IFCA: the cluster it names must exist)."""
        return start

    def client_model(self, client_id: int) -> StateDict | None:
        """The server's own model for ``client_id`` where it keeps one per client (IFCA: its cluster's; default
        None): what per-client evaluation scores as that client's personal model."""
        return None

    @abstractmethod
    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """Return the new global adapter; must not mutate ``global_params`` or ``updates``."""

    def round_record(self) -> dict[str, Any]:
        """What the last ``aggregate`` chose, which the round's metrics.jsonl line keeps under ``"aggregation"``
        (Krum: the clients it selected and their scores; default: nothing)."""
        return {}

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
