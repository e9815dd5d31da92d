"""The bytes a run moves: its totals (checkpointed), a round's cost before it runs, and the clients' residuals.

``Traffic`` adds up what the transport measured for every reply (``EncodedUpdate.bytes_*``), so
``--comm_budget_mb`` and each round's ``bytes_total`` count what really travelled. ``round_cost``
predicts a round exactly before anything is trained: the encoded starts and payloads are known, and a
reply's size follows from the shapes the server expects back (``Codec.size``). On Flower the totals
are the serialised messages' sizes, which ``flower_app.grid_clients.GridClients.round_cost``
predicts instead. The error-feedback
residuals the simulation keeps for its clients are restored here from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from federated_learning.aggregators import Aggregator
from federated_learning.state import num_bytes
from federated_learning.types import StateDict
from federated_learning.updates import UnreadableReply
from federated_learning.wire import EncodedState, EncodedUpdate, Wire


@dataclass
class Traffic:
    """Bytes uploaded and downloaded so far in the run."""

    uploaded: int = 0
    downloaded: int = 0

    @property
    def total(self) -> int:
        """Up + down."""
        return self.uploaded + self.downloaded

    def count(self, reply: EncodedUpdate | UnreadableReply) -> None:
        """Add one client-round's bytes, as the transport measured them (an unreadable reply: its train message)."""
        self.uploaded += getattr(reply, "bytes_uploaded", 0)
        self.downloaded += reply.bytes_downloaded

    def state_dict(self) -> dict[str, int]:
        """For checkpoints (plain values: federated_state.json)."""
        return {"uploaded": self.uploaded, "downloaded": self.downloaded}

    @classmethod
    def from_state(cls, saved: Mapping[str, Any]) -> Traffic:
        """Read ``state_dict``'s output ({} from a checkpoint older than codecs: nothing counted yet)."""
        if not saved:
            return cls()
        if sorted(saved) != ["downloaded", "uploaded"] or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in saved.values()):
            raise ValueError(f"bytes_sent {dict(saved)!r} is not two byte counts")
        return cls(saved["uploaded"], saved["downloaded"])


def round_cost(aggregator: Aggregator, wire: Wire, tasks: Sequence[Any], starts: Sequence[StateDict],
               encoded: Sequence[EncodedState]) -> int:
    """Bytes a round will move, before it runs, as the simulation counts them: each client's encoded start and
    payload down; its reply up, at the codec's size for the keys it sends at its rank, plus the float32 extras
    the algorithm requires (SCAFFOLD's Δc_i)."""
    total = 0
    for task, start, down in zip(tasks, starts, encoded, strict=True):
        total += down.nbytes + sum(num_bytes(p) for p in aggregator.client_payload(task.client_id).values())
        expected = [start[k] for k in aggregator.client_class.sent_keys(task.server_round, start)]
        total += sum(wire.upload.size(tuple(t.shape), torch.float32 if wire.sends_updates else t.dtype)
                     for t in expected)
        total += len(aggregator.required_extras) * sum(4 * t.numel() for t in expected)
    return total


def load_residuals(saved: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                   num_clients: int) -> dict[int, StateDict]:
    """The clients' error-feedback residuals from a checkpoint; a ValueError when they do not fit the run."""
    restored: dict[int, StateDict] = {}
    for key, state in saved.items():
        if not key.isdigit() or int(key) >= num_clients:
            raise ValueError(f"residual of client {key!r}, not one of 0..{num_clients - 1}")
        for name, tensor in state.items():
            full = shapes.get(name)
            if full is None or tensor.dim() != len(full) or any(n > m for n, m in zip(tensor.shape, full, strict=True)):
                raise ValueError(f"client {key}'s residual {name} does not fit this run's adapter")
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"client {key}'s residual {name} holds NaN or Inf")
        restored[int(key)] = {name: tensor.clone() for name, tensor in state.items()}
    return restored
