"""Server-side math of the LoRA-aware algorithms: updates of a subset of keys or of lower rank, and B·A products.

Pure like ``_pseudo_gradient``: inputs are never mutated, products and sums run in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from federated_learning.aggregators._base import Aggregator
from federated_learning.lora_ranks import factor_pairs, is_a, is_b, pad_rank
from federated_learning.merged_delta import merged_key, split_state
from federated_learning.types import ClientUpdate, StateDict


def _fits(key: str, shape: torch.Size, global_shape: torch.Size, lower_rank: bool) -> bool:
    """Whether a client's ``key`` of ``shape`` is the global one or (``lower_rank``) a LoRA factor of lower rank."""
    if shape == global_shape:
        return True
    if not lower_rank:
        return False
    if is_a(key):
        return shape[1:] == global_shape[1:] and 1 <= shape[0] <= global_shape[0]
    if is_b(key):
        return len(shape) == 2 and shape[0] == global_shape[0] and 1 <= shape[1] <= global_shape[1]
    return False


def check_lora_updates(
    global_params: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate], keys: Iterable[str],
    lower_rank: bool = False,
) -> None:
    """``check_updates`` for the LoRA-aware rules: every update carries exactly ``keys`` (what the algorithm's
    clients send, ``ClientAlgorithm.sent_keys``), each shaped like the global one or, with ``lower_rank`` (the
    algorithm's ``supports_client_ranks``), a factor of lower rank (its A and B of one rank), a positive
    example count, once per client. A ValueError says which client breaks it."""
    if not updates:
        raise ValueError("cannot aggregate a round without client updates")
    keys = set(keys)
    seen: set[int] = set()
    for update in updates:
        cid = update.client_id
        if cid in seen:
            raise ValueError(f"client {cid} sent two updates in one round")
        seen.add(cid)
        missing, unknown = sorted(keys - update.params.keys()), sorted(update.params.keys() - keys)
        if missing or unknown:
            example = missing[0] if missing else unknown[0]
            raise ValueError(f"client {cid}'s update has other keys than the algorithm's clients send, e.g. {example}")
        for key, tensor in update.params.items():
            if not _fits(key, tensor.shape, global_params[key].shape, lower_rank):
                raise ValueError(f"client {cid}'s {key} has shape {tuple(tensor.shape)}, the global adapter "
                                 f"{tuple(global_params[key].shape)}")
        for a_key, b_key in factor_pairs(list(keys)).values():
            if update.params[a_key].shape[0] != update.params[b_key].shape[1]:
                raise ValueError(f"client {cid}'s {a_key} and {b_key} have different ranks")
        if isinstance(update.num_examples, bool) or not update.num_examples > 0:
            raise ValueError(f"client {cid}'s num_examples {update.num_examples!r} is not positive")


def padded(global_params: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> StateDict:
    """A client's factors zero-padded to the global rank (the other keys as they are)."""
    return {key: pad_rank(global_params[key], key, tensor) for key, tensor in params.items()}


def example_weights(updates: Sequence[ClientUpdate]) -> list[float]:
    """p_k = n_k / Σ n_j, the clients' shares by example count (all 1 under ``--client_weighting uniform``)."""
    total = float(sum(u.num_examples for u in updates))
    return [u.num_examples / total for u in updates]


@torch.no_grad()
def weighted_products(
    global_params: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate], weights: Sequence[float]
) -> StateDict:
    """{merged-delta key: Σ_k p_k B_k A_k} over every LoRA layer of ``global_params``, in float32 (each client at
    its own rank; every update must carry both factors)."""
    out = {}
    for a_key, b_key in factor_pairs(list(global_params)).values():
        acc = torch.zeros(global_params[b_key].shape[0], global_params[a_key].shape[1])
        for update, weight in zip(updates, weights, strict=True):
            acc.addmm_(update.params[b_key].float(), update.params[a_key].float(), alpha=weight)
        out[merged_key(a_key)] = acc
    return out


def merged_or_zero(global_params: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict]:
    """(adapter, merged deltas) of a global state, a layer without a merged delta given a zero one (float32)."""
    adapter, merged = split_state(global_params)
    for a_key, b_key in factor_pairs(list(adapter)).values():
        key = merged_key(a_key)
        if key not in merged:
            merged[key] = torch.zeros(adapter[b_key].shape[0], adapter[a_key].shape[1])
    return adapter, merged


def sent_keys(aggregator: Aggregator, global_params: Mapping[str, torch.Tensor], server_round: int) -> list[str]:
    """The keys ``aggregator``'s clients send in ``server_round`` (1-based, as ``aggregate`` receives it)."""
    return aggregator.client_class.sent_keys(server_round - 1, global_params)
