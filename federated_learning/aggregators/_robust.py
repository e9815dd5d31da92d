"""Server-side math of the robust aggregators: coordinate-wise order statistics and Krum's scores.

Pure like ``_lora``: inputs are never mutated. Every client counts once (no example weights: a
Byzantine client could claim any count), and only the keys the clients send are combined; a key
no client sends stays as it is. Order statistics are taken in float64 and cast back to each key's
dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._lora import check_lora_updates, sent_keys
from federated_learning.types import ClientUpdate, StateDict


def robust_keys(aggregator: Aggregator, global_params: StateDict, updates: Sequence[ClientUpdate],
                server_round: int) -> list[str]:
    """The keys ``aggregator``'s clients send in ``server_round``, after checking every update carries exactly
    them at the global shapes (a ValueError names the client that does not)."""
    keys = sent_keys(aggregator, global_params, server_round)
    check_lora_updates(global_params, updates, keys)
    return keys


@torch.no_grad()
def coordinate_wise(
    global_params: StateDict, updates: Sequence[ClientUpdate], keys: Sequence[str],
    statistic: Callable[[torch.Tensor], torch.Tensor],
) -> StateDict:
    """The global state with each of ``keys`` replaced by ``statistic`` of the clients' values sorted along dim 0
    (shape (n, *key shape), float64, ascending per coordinate)."""
    out = {key: x.clone() for key, x in global_params.items()}
    for key in keys:
        ordered = torch.stack([u.params[key].double() for u in updates]).sort(dim=0).values
        out[key] = statistic(ordered).to(global_params[key].dtype)
    return out


def median(ordered: torch.Tensor) -> torch.Tensor:
    """The median of each coordinate of sorted values: the middle one, or the mean of the two middle ones."""
    n = ordered.shape[0]
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_mean(trim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mean of each coordinate's sorted values without the ``trim`` smallest and ``trim`` largest."""

    def statistic(ordered: torch.Tensor) -> torch.Tensor:
        return ordered[trim:ordered.shape[0] - trim].mean(dim=0)

    return statistic


@torch.no_grad()
def squared_distances(updates: Sequence[ClientUpdate], keys: Sequence[str]) -> torch.Tensor:
    """D[i, j] = ||y_i - y_j||^2 over ``keys`` (float64, n x n): the same as between the updates y_i - x."""
    n = len(updates)
    distances = torch.zeros(n, n, dtype=torch.float64)
    for key in keys:
        flat = torch.stack([u.params[key].double().flatten() for u in updates])
        distances += torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist").square()
    return distances


def krum_neighbours(n: int, num_malicious: int) -> int:
    """How many nearest neighbours Krum sums over: the paper's n - f - 2, at least 1 (Flower's convention, for a
    round with fewer replies than the flags planned for) and at most the n - 1 others."""
    return min(n - 1, max(1, n - num_malicious - 2))


def krum_scores(distances: torch.Tensor, num_malicious: int) -> list[float]:
    """Krum's score of every client: the sum of its squared distances to its n - f - 2 nearest other clients."""
    n = distances.shape[0]
    neighbours = krum_neighbours(n, num_malicious)
    scores = []
    for i in range(n):
        others = torch.cat([distances[i, :i], distances[i, i + 1:]])
        scores.append(float(others.sort().values[:neighbours].sum()))
    return scores


def lowest(scores: Sequence[float], m: int) -> list[int]:
    """The indices of the ``m`` lowest scores, ties to the earlier index (the order the server sampled them)."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:m]


@torch.no_grad()
def plain_mean(
    global_params: StateDict, chosen: Sequence[Mapping[str, torch.Tensor]], keys: Sequence[str]
) -> StateDict:
    """The global state with each of ``keys`` replaced by the unweighted mean over ``chosen`` (float64)."""
    out = {key: x.clone() for key, x in global_params.items()}
    for key in keys:
        out[key] = torch.stack([p[key].double() for p in chosen]).mean(dim=0).to(global_params[key].dtype)
    return out
