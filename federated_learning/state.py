"""Adapter state dicts: read/write a PEFT model's adapter, arithmetic, size, checkpoint I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from peft import get_peft_model_state_dict

from federated_learning.lora_ranks import pad_rank
from federated_learning.merged_delta import is_merged_key
from federated_learning.types import StateDict


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Map each adapter key (as ``get_peft_model_state_dict`` names it) to its live parameter.

    PEFT strips the adapter name from state-dict keys; rather than rewriting parameter names we
    match the two by storage, which is exact whatever the adapter is called.
    """
    by_storage = {
        p.data_ptr(): p for p in model.parameters() if p.requires_grad
    }
    mapping = {}
    for key, tensor in get_peft_model_state_dict(model).items():
        param = by_storage.get(tensor.data_ptr())
        if param is not None:
            mapping[key] = param
    if not mapping:
        raise ValueError("the model has no trainable adapter parameters (is --use_peft set?)")
    return mapping


@torch.no_grad()
def get_state(trainable: Mapping[str, torch.Tensor]) -> StateDict:
    """Copy the adapter out of the model (detached, on CPU, its own storage)."""
    return {k: p.detach().to("cpu", copy=True) for k, p in trainable.items()}


@torch.no_grad()
def set_state(trainable: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into the live parameters in place (optimizers keep pointing at them)."""
    missing = trainable.keys() - state.keys()
    if missing:
        raise KeyError(f"adapter state lacks {len(missing)} keys, e.g. {sorted(missing)[0]}")
    for key, param in trainable.items():
        param.copy_(state[key])


@torch.no_grad()
def load_start(live: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor]) -> None:
    """``set_state`` for a client's start state, in which a merged-delta key left out means zero and LoRA
    factors of lower rank fill the first components (the others zero, ``federated_learning.lora_ranks``)."""
    missing = [key for key in live.keys() - start.keys() if not is_merged_key(key)]
    if missing:
        raise KeyError(f"start state lacks {len(missing)} keys, e.g. {sorted(missing)[0]}")
    for key, tensor in live.items():
        if key in start:
            tensor.copy_(pad_rank(tensor, key, start[key]))
        else:
            tensor.zero_()


@torch.no_grad()
def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> StateDict:
    """Return sum_i w_i * s_i / sum_i w_i, in float32 accumulation, each key in its input dtype."""
    if not states:
        raise ValueError("cannot average zero states")
    if len(states) != len(weights):
        raise ValueError("one weight per state is required")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {total}")
    out = {}
    for key, first in states[0].items():
        acc = torch.zeros_like(first, dtype=torch.float32)
        for state, weight in zip(states, weights, strict=True):
            acc.add_(state[key].float(), alpha=weight / total)
        out[key] = acc.to(first.dtype)
    return out


@torch.no_grad()
def subtract(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> StateDict:
    """Return a - b, key by key."""
    return {k: a[k] - b[k] for k in a}


@torch.no_grad()
def is_finite(state: Mapping[str, torch.Tensor]) -> bool:
    """True when no tensor of ``state`` holds NaN or Inf."""
    return all(bool(torch.isfinite(t).all()) for t in state.values())


def num_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes needed to send ``state`` (sum of tensor payloads)."""
    return sum(t.numel() * t.element_size() for t in state.values())
