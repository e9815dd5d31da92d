"""What each client keeps for itself between rounds (FedSA-LoRA's B), as the single-process simulation holds it.

On Flower this lives on each SuperNode (``flower_app.client_app``); in the simulation the round loop
keeps it here, one state per client that has trained, and checkpoints it with the server state so
a resume continues every client exactly. The server never aggregates it: the only place it meets
the global model is ``mean_view``, the global adapter with each personal key replaced by the mean
over the clients holding one, weighted by their example counts, which the round evaluation scores
(the method's own global model; a Flower server, which never sees them, evaluates its global
adapter as it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from federated_learning.state import weighted_average
from federated_learning.types import StateDict


@dataclass
class PersonalStates:
    """{client id: its kept state} and the example counts that weigh them in ``mean_view``."""

    states: dict[int, StateDict] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)

    def get(self, client_id: int) -> StateDict | None:
        """The state ``client_id`` kept, None before its first round."""
        return self.states.get(client_id)

    def keep(self, client_id: int, state: StateDict, num_examples: int) -> None:
        """Store what ``client_id`` keeps after a round whose update the server accepted (nothing when the
        algorithm keeps nothing); ``num_examples`` weighs it in ``mean_view`` (1 under uniform weighting)."""
        if state:
            self.states[client_id] = state
            self.sizes[client_id] = num_examples

    def mean_view(self, global_params: Mapping[str, torch.Tensor]) -> StateDict | None:
        """The global adapter with every kept key averaged over the clients (None: no client keeps anything)."""
        if not self.states:
            return None
        clients = sorted(self.states)
        mean = weighted_average([self.states[c] for c in clients], [self.sizes[c] for c in clients])
        return {**global_params, **mean}

    def state_dict(self) -> dict[str, Any]:
        """For checkpoints: {"<id>": state} and {"<id>": size} (absent when no client keeps anything)."""
        if not self.states:
            return {}
        return {"states": {str(c): s for c, s in self.states.items()},
                "sizes": {str(c): n for c, n in self.sizes.items()}}

    def load_state_dict(self, saved: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                        num_clients: int) -> None:
        """Restore ``state_dict``'s output; a ValueError when it does not fit the run (``shapes``: the kept keys')."""
        states, sizes = saved.get("states", {}), saved.get("sizes", {})
        if states.keys() != sizes.keys():
            raise ValueError("the kept client states and their sizes name different clients")
        restored: dict[int, StateDict] = {}
        for key, state in states.items():
            if not key.isdigit() or int(key) >= num_clients:
                raise ValueError(f"kept state of client {key!r}, not one of 0..{num_clients - 1}")
            if {k: tuple(t.shape) for k, t in state.items()} != dict(shapes):
                raise ValueError(f"client {key}'s kept state does not fit this run's adapter")
            if not all(bool(torch.isfinite(t).all()) for t in state.values()):
                raise ValueError(f"client {key}'s kept state holds NaN or Inf")
            count = sizes[key]
            if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
                raise ValueError(f"client {key}'s size {count!r} is not a positive whole number")
            restored[int(key)] = {k: t.clone() for k, t in state.items()}
        self.states = restored
        self.sizes = {int(k): v for k, v in sizes.items()}
