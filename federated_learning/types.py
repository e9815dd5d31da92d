"""Core value types shared by the round loop, the clients and the aggregators."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

StateDict = dict[str, torch.Tensor]
"""A PEFT adapter state, keyed by the names ``get_peft_model_state_dict`` uses (no adapter name)."""


@dataclass
class ClientUpdate:
    """What one client sends back to the server after one round of local training."""

    client_id: int
    params: StateDict
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, StateDict] = field(default_factory=dict)
