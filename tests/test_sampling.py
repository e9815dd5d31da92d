"""Client and example sampling: seeded per round, without replacement, no global RNG use."""

from __future__ import annotations

import random

import pytest

from federated_learning.sampling import derive_seed, sample_clients, sample_examples
from utils.schedule import cosine_learning_rate


def test_clients_deterministic_per_seed_and_round() -> None:
    a = [sample_clients(None, 20, 3, seed=7, server_round=r) for r in range(10)]
    b = [sample_clients(None, 20, 3, seed=7, server_round=r) for r in range(10)]
    assert a == b
    assert len({tuple(c) for c in a}) > 1  # rounds differ
    assert sample_clients(None, 20, 3, seed=8, server_round=0) != a[0] or a[1] != sample_clients(
        "fedavg", 20, 3, seed=8, server_round=1
    )


def test_clients_without_replacement_and_sorted() -> None:
    for r in range(50):
        clients = sample_clients(None, 10, 10, seed=1, server_round=r)
        assert clients == list(range(10))
        some = sample_clients(None, 10, 4, seed=1, server_round=r)
        assert len(set(some)) == 4 and some == sorted(some) and all(0 <= c < 10 for c in some)


def test_local_alg_trains_only_its_client() -> None:
    assert sample_clients(7, 10, 2, seed=0, server_round=3) == [7]


def test_global_rng_untouched() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    sample_clients(None, 100, 10, seed=0, server_round=5)
    sample_examples(1000, 50, seed=0, client_id=3, server_round=5)
    derive_seed(0, 3, 5)
    assert random.random() == expected


def test_examples_capped_at_shard_size_and_distinct() -> None:
    rows = sample_examples(30, 100, seed=0, client_id=1, server_round=0)
    assert sorted(rows) == list(range(30))
    rows = sample_examples(1000, 40, seed=0, client_id=1, server_round=0)
    assert len(set(rows)) == 40
    assert rows == sample_examples(1000, 40, seed=0, client_id=1, server_round=0)
    assert rows != sample_examples(1000, 40, seed=0, client_id=2, server_round=0)


def test_cosine_learning_rate_matches_openfedllm_formula() -> None:
    assert cosine_learning_rate(0, 10, 1e-3, 1e-6) == pytest.approx(1e-3)
    assert cosine_learning_rate(5, 10, 1e-3, 1e-6) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert cosine_learning_rate(10, 10, 1e-3, 1e-6) == pytest.approx(1e-6)


def test_sampling_among_the_available_clients() -> None:
    from federated_learning.sampling import sample_clients

    for r in range(20):  # every client available: the same draw as without the argument
        assert sample_clients(None, 10, 3, 7, r, list(range(10))) == sample_clients(None, 10, 3, 7, r)
        drawn = sample_clients(None, 10, 3, 7, r, [1, 4, 5, 8])
        assert len(drawn) == 3 and set(drawn) <= {1, 4, 5, 8}
    assert sample_clients(None, 10, 3, 7, 0, [6, 2]) == [2, 6]  # fewer than asked: all of them
