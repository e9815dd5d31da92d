"""Each client's own held-out set: test examples drawn with the mix of labels/categories its training rows have.

A client of a non-IID split sees its own distribution, so a score on the pooled test split says
little about it. Its held-out set here is a seeded sample of the test split with the same share of
each ``--partition_column`` value as the client's training shard (largest-remainder quotas of
``per_client`` examples). With a natural split (one client per value) that is the test rows of the
client's own group. The test split is disjoint from the training rows by construction of the
datasets; a client's set never repeats an example, while two clients with similar mixes may share
some (each set is drawn on its own, as each client would hold out its own rows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def client_mixes(train_values: Sequence[Hashable], partition: Sequence[np.ndarray]) -> list[dict[Hashable, float]]:
    """Each client's share of every value among its training rows (``partition``: row indices into ``train_values``)."""
    mixes = []
    for rows in partition:
        counts = Counter(train_values[int(i)] for i in rows)
        total = sum(counts.values())
        mixes.append({value: count / total for value, count in counts.items()} if total else {})
    return mixes


def quotas(mix: dict[Hashable, float], size: int) -> dict[Hashable, int]:
    """``size`` examples shared out by ``mix`` (largest remainder; ties go to the value that sorts first)."""
    values = sorted(mix, key=str)
    exact = {value: mix[value] * size for value in values}
    counts = {value: int(np.floor(exact[value])) for value in values}
    left = size - sum(counts.values())
    for value in sorted(values, key=lambda v: counts[v] - exact[v])[:left]:
        counts[value] += 1
    return {value: count for value, count in counts.items() if count}


def client_eval_indices(
    test_values: Sequence[Hashable], mixes: Sequence[dict[Hashable, float]], per_client: int, seed: int
) -> list[np.ndarray]:
    """Each client's held-out examples: positions into ``test_values``, ``per_client`` of them drawn by its mix.

    A value with fewer test examples than its quota gives all it has (the set is then smaller);
    a ValueError names ``--eval_per_client`` when a client's values have no test example at all.
    """
    positions: dict[Hashable, list[int]] = {}
    for position, value in enumerate(test_values):
        positions.setdefault(value, []).append(position)
    pools = {value: np.asarray(rows, dtype=np.int64) for value, rows in positions.items()}
    sets = []
    for client, mix in enumerate(mixes):
        rng = np.random.default_rng([seed, client])
        picked = []
        for value, count in quotas(mix, per_client).items():
            pool = pools.get(value, np.zeros(0, dtype=np.int64))
            picked.append(rng.permutation(pool)[:count])
        chosen = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
        if not len(chosen):
            raise ValueError(f"--eval_per_client: client {client}'s training values {sorted(mix, key=str)} have no "
                             "scorable example in the test split (one that fits --seq_length), so it has no held-out "
                             "set; use a dataset whose test split covers every client's labels, raise --seq_length, "
                             "or drop --eval_per_client")
        sets.append(chosen)
    return sets
