"""Which clients train in a round: seeded per (seed, round), with its own RNG, no global state."""

from __future__ import annotations

import random
from collections.abc import Sequence


def sample_clients(
    local_client: int | None, num_clients: int, sample_clients: int, seed: int, server_round: int,
    available: Sequence[int] | None = None,
) -> list[int]:
    """Return the sorted client ids that train in ``server_round`` (sampled without replacement).

    ``available``: the clients that can be reached (on Flower: whose SuperNode is connected; None:
    all); the draw is among them, at most as many as there are. With every client available it is
    the same draw as without the argument.

    ``local_client`` K (``--fed_alg local<K>``) always trains client K alone. A private
    ``random.Random`` seeded from (seed, round) makes each round reproducible on its own -- resuming
    needs no RNG state -- and leaves the global ``random`` state untouched (OpenFedLLM reseeded the
    global RNG every round).
    """
    if local_client is not None:
        return [local_client]
    rng = random.Random(f"clients/{seed}/{server_round}")
    population = range(num_clients) if available is None else sorted(available)
    return sorted(rng.sample(population, min(sample_clients, len(population))))


def sample_examples(num_available: int, num_wanted: int, seed: int, client_id: int, server_round: int) -> list[int]:
    """Indices of the examples client ``client_id`` trains on in ``server_round`` (no replacement).

    As OpenFedLLM: batch_size x gradient_accumulation_steps x max_steps examples, capped at the
    shard size; drawn here from a per-(client, round) RNG rather than the global one.
    """
    rng = random.Random(f"examples/{seed}/{client_id}/{server_round}")
    return rng.sample(range(num_available), min(num_wanted, num_available))


def derive_seed(seed: int, client_id: int, server_round: int) -> int:
    """A training seed for one (client, round), independent of every other draw."""
    return random.Random(f"train/{seed}/{client_id}/{server_round}").getrandbits(31)
