"""The server's check of every client update, the same for every algorithm, before anything aggregates it.

A client (on Flower: whatever answers for a SuperNode) may send anything. An update is used only if
its adapter has exactly the global adapter's keys, shapes and dtypes, every value is finite, its
extras (SCAFFOLD's control-variate delta, ...) are shaped like the adapter and finite, its example
count is a whole number with ``0 < num_examples`` (and at most the client's partition, where the
server knows it), its training loss is a finite number, and, with ``--max_update_norm`` C, its
update ``||y - x||`` (over the whole adapter) is at most C. Otherwise it is left out of the round
with a warning naming the client and the reason, and the reason is recorded in metrics.jsonl; the
round goes on with the other updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

import torch

from federated_learning.types import ClientUpdate, StateDict


def _check_state(state: object, global_params: StateDict, what: str, *, same_keys: bool) -> str | None:
    """Why ``state`` is not an adapter-shaped, finite state (None: it is)."""
    if not isinstance(state, Mapping):
        return f"{what} is not a mapping of tensors"
    missing = sorted(global_params.keys() - state.keys()) if same_keys else []
    unexpected = sorted(state.keys() - global_params.keys())
    if missing or unexpected:
        parts = ([f"lacks {len(missing)} keys, e.g. {missing[0]}"] if missing else []) + (
            [f"has {len(unexpected)} unknown keys, e.g. {unexpected[0]}"] if unexpected else [])
        return f"{what} {' and '.join(parts)}"
    for key, tensor in state.items():
        reference = global_params[key]
        if not isinstance(tensor, torch.Tensor):
            return f"{what}[{key}] is not a tensor"
        if tensor.shape != reference.shape:
            return f"{what}[{key}] has shape {tuple(tensor.shape)}, the global adapter {tuple(reference.shape)}"
        if not tensor.is_floating_point():
            return f"{what}[{key}] has dtype {tensor.dtype}, not a floating-point one"
        if same_keys and tensor.dtype != reference.dtype:
            return f"{what}[{key}] has dtype {tensor.dtype}, the global adapter {reference.dtype}"
        if not bool(torch.isfinite(tensor).all()):
            return f"{what}[{key}] holds NaN or Inf"
    return None


@torch.no_grad()
def update_norm(global_params: StateDict, params: StateDict) -> float:
    """||y - x||_2 over the whole adapter, in float64."""
    total = sum(float((params[k].double() - x.double()).square().sum()) for k, x in global_params.items())
    return math.sqrt(total)


def rejection_reason(
    global_params: StateDict,
    update: ClientUpdate,
    *,
    max_examples: int | None = None,
    max_update_norm: float | None = None,
) -> str | None:
    """Why the server must leave ``update`` out of the round (None: it may be aggregated).

    ``max_examples``: the most examples this client can have (its partition's size), when known;
    ``max_update_norm``: the bound on ||y - x|| (None or 0: no bound).
    """
    reason = _check_state(update.params, global_params, "adapter", same_keys=True)
    if reason is not None:
        return reason
    if not isinstance(update.extras, Mapping):
        return "extras is not a mapping"
    for name, state in update.extras.items():
        reason = _check_state(state, global_params, f"extras[{name}]", same_keys=False)
        if reason is not None:
            return reason
    count = update.num_examples
    if isinstance(count, bool) or not isinstance(count, Integral) or count <= 0:
        return f"num_examples {count!r} is not a positive whole number"
    if max_examples is not None and count > max_examples:
        return f"num_examples {count} exceeds the {max_examples} examples of its partition"
    loss = update.metrics.get("train_loss") if isinstance(update.metrics, Mapping) else None
    if isinstance(loss, bool) or not isinstance(loss, Real) or not math.isfinite(loss):
        return f"train_loss {loss!r} is not a finite number"
    if max_update_norm:
        norm = update_norm(global_params, update.params)
        if norm > max_update_norm:
            return f"update norm {norm:.4g} exceeds --max_update_norm {max_update_norm:g}"
    return None
