"""Server-side tensor math shared by the algorithms that step from the global adapter.

Everything here is pure: inputs are never mutated; arithmetic runs in float32 whatever the adapter
dtype, and only the returned adapter is cast back to the input dtypes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from federated_learning.types import ClientUpdate, StateDict


def check_updates(global_params: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate]) -> None:
    """Raise a ValueError unless every update carries exactly the global keys, with their shapes, a
    positive example count, once per client (the Python API's precondition of every aggregator; the
    round loop screens each update fully before, ``federated_learning.updates``)."""
    if not updates:
        raise ValueError("cannot aggregate a round without client updates")
    seen: set[int] = set()
    for update in updates:
        if update.client_id in seen:
            raise ValueError(f"client {update.client_id} sent two updates in one round")
        seen.add(update.client_id)
        missing, extra = global_params.keys() - update.params.keys(), update.params.keys() - global_params.keys()
        if missing or extra:
            example = min(missing) if missing else min(extra)
            raise ValueError(f"client {update.client_id}'s adapter has other keys than the global one, e.g. {example}")
        for key, tensor in global_params.items():
            if update.params[key].shape != tensor.shape:
                raise ValueError(
                    f"client {update.client_id}'s {key} has shape {tuple(update.params[key].shape)}, "
                    f"the global adapter {tuple(tensor.shape)}"
                )
        if isinstance(update.num_examples, bool) or not update.num_examples > 0:
            raise ValueError(f"client {update.client_id}'s num_examples {update.num_examples!r} is not positive")


@torch.no_grad()
def mean_delta(
    global_params: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate], weighted: bool = True
) -> StateDict:
    """Return the pseudo-gradient Δ̄ = Σ_i w_i (y_i − x) / Σ_i w_i in float32.

    ``w_i`` is the client's ``num_examples`` when ``weighted``, else 1 (OpenFedLLM's FedOpt).
    """
    check_updates(global_params, updates)
    weights = [float(u.num_examples) if weighted else 1.0 for u in updates]
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"client num_examples must sum to a positive number, got {total}")
    out = {}
    for key, x in global_params.items():
        x32 = x.float()
        acc = torch.zeros_like(x32)
        for update, weight in zip(updates, weights, strict=True):
            acc.add_(update.params[key].float() - x32, alpha=weight / total)
        out[key] = acc
    return out


@torch.no_grad()
def apply_step(
    global_params: Mapping[str, torch.Tensor], step: Mapping[str, torch.Tensor], scale: float = 1.0
) -> StateDict:
    """Return x + scale * step, computed in float32, each key cast back to x's dtype."""
    return {key: (x.float() + scale * step[key]).to(x.dtype) for key, x in global_params.items()}


def zeros_like_state(state: Mapping[str, torch.Tensor], fill: float = 0.0) -> StateDict:
    """A float32 state shaped like ``state``, every entry ``fill`` (lazy server-state allocation)."""
    return {key: torch.full_like(t, fill, dtype=torch.float32) for key, t in state.items()}


def clone_state(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Float32 copies with their own storage (so loaded state never aliases the caller's tensors)."""
    return {key: t.detach().to(torch.float32, copy=True) for key, t in state.items()}


def check_same_keys(stored: Mapping[str, torch.Tensor], global_params: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise if server state ``what`` was built for another adapter (keys or shapes) than ``global_params``."""
    if stored.keys() != global_params.keys() or any(
        stored[key].shape != tensor.shape for key, tensor in global_params.items()
    ):
        raise ValueError(
            f"the aggregator's {what} does not match the adapter's keys (was it resumed from a run with "
            "another --peft_target_modules or --peft_lora_r?)"
        )
