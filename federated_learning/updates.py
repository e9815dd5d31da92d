"""The server's check of every client update, the same for every algorithm, before anything aggregates it.

A client (on Flower: whatever answers for a SuperNode) may send anything. An update is used only if
its adapter has exactly the global adapter's keys, shapes and dtypes, every value is finite, its
extras (SCAFFOLD's control-variate delta, ...) are shaped like the adapter and finite, its example
count is a whole number with ``0 < num_examples`` (and at most the client's partition, where the
server knows it), its training loss is a finite number, no value of ``y - x`` overflows the
server's float32 arithmetic, and, with ``--max_update_norm`` C, its update ``||y - x||`` (over the
whole adapter) is at most C (``--update_norm_bound reject``, the default; with ``clip`` a longer
update is scaled to norm C instead, ``clip_update``). Extras the algorithm requires (SCAFFOLD's
``delta_c``) must be there with every adapter key; extras are checked for shape and finiteness, not
bounded in size (the norm bound is on the adapter). Otherwise -- or when the transport could not
read the reply at all (an ``UnreadableReply``) -- the update is left out of the round with a warning
naming the client and the reason, and the reason is recorded in metrics.jsonl; the round goes on with the other updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import torch

from federated_learning.types import ClientUpdate, StateDict

# The server squares updates in float32 (FedOpt's second moment): larger values would overflow to Inf.
MAX_UPDATE_VALUE = math.sqrt(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class UnreadableReply:
    """What a client runner returns for a reply it could not read as an update (on Flower: malformed records), or,
    ``failed``, for a client that sent none (an error, or nothing within the round's timeout)."""

    client_id: int
    reason: str
    bytes_downloaded: int = 0  # the train message that went out to this client, as the transport measured it
    failed: bool = False  # no update came back at all (the client failed or did not answer in time)


def _check_state(
    state: object, global_params: StateDict, what: str, *, same_keys: bool, same_dtypes: bool
) -> str | None:
    """Why ``state`` is not an adapter-shaped, finite, dense CPU-readable state (None: it is).

    ``same_keys``: exactly the adapter's keys (else a subset); ``same_dtypes``: the adapter's dtypes too.
    """
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
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            return f"{what}[{key}] is not a dense tensor with data ({tensor.layout}, {tensor.device})"
        if tensor.shape != reference.shape:
            return f"{what}[{key}] has shape {tuple(tensor.shape)}, the global adapter {tuple(reference.shape)}"
        if not tensor.is_floating_point():
            return f"{what}[{key}] has dtype {tensor.dtype}, not a floating-point one"
        if same_dtypes and tensor.dtype != reference.dtype:
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
    update: ClientUpdate | UnreadableReply,
    *,
    max_examples: int | None = None,
    max_update_norm: float | None = None,
    required_extras: Sequence[str] = (),
) -> str | None:
    """Why the server must leave ``update`` out of the round (None: it may be aggregated).

    ``max_examples``: the most examples this client can have (its partition's size), when known;
    ``max_update_norm``: the bound on ||y - x|| (None or 0: no bound); ``required_extras``: the
    extras the algorithm needs (``Aggregator.required_extras``), each with exactly the adapter's keys.
    """
    if isinstance(update, UnreadableReply):
        return update.reason
    reason = _check_state(update.params, global_params, "adapter", same_keys=True, same_dtypes=True)
    if reason is not None:
        return reason
    if not isinstance(update.extras, Mapping):
        return "extras is not a mapping"
    missing = [name for name in required_extras if name not in update.extras]
    if missing:
        return f"extras lack {', '.join(missing)}, which the algorithm needs"
    for name, state in update.extras.items():
        reason = _check_state(state, global_params, f"extras[{name}]", same_keys=name in required_extras,
                              same_dtypes=False)
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
    largest = max(float((update.params[k].double() - x.double()).abs().max()) for k, x in global_params.items())
    if largest > MAX_UPDATE_VALUE:
        return f"an update value of {largest:.3g} is beyond what the server's float32 arithmetic can square"
    if max_update_norm:
        norm = update_norm(global_params, update.params)
        if norm > max_update_norm:
            return f"update norm {norm:.4g} exceeds --max_update_norm {max_update_norm:g}"
    return None


@torch.no_grad()
def clip_update(global_params: StateDict, update: ClientUpdate, max_norm: float) -> tuple[ClientUpdate, float]:
    """Norm bounding (Sun et al., 2019, "Can You Really Backdoor Federated Learning?"): ``update`` with its
    adapter moved to y' = x + (y - x) · min(1, C / ||y - x||), C = ``max_norm``, and ||y - x|| before.

    The bound is over the whole adapter (the keys of ``global_params``, what the client was to send);
    extras (SCAFFOLD's control-variate delta) are left as they are. A client within the bound is
    returned as it is.
    """
    norm = update_norm(global_params, update.params)
    if norm <= max_norm:
        return update, norm
    scale = max_norm / norm
    params = {k: (x.double() + (update.params[k].double() - x.double()) * scale).to(update.params[k].dtype)
              for k, x in global_params.items()}
    return ClientUpdate(update.client_id, params, update.num_examples, update.metrics, update.extras), norm


def numeric_metrics(metrics: Mapping[object, object]) -> dict[str, float | int]:
    """The metrics of an accepted update that metrics.jsonl can hold: finite numbers under string keys."""
    return {key: value for key, value in metrics.items() if isinstance(key, str) and not isinstance(value, bool)
            and isinstance(value, Integral | Real) and math.isfinite(value)}
