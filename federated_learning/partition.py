"""Split a training set into client shards."""

from __future__ import annotations

from datasets import Dataset

SPLIT_STRATEGIES = ("iid",)


def split_dataset(dataset: Dataset, num_clients: int, strategy: str = "iid", seed: int = 2023, **options: object) -> list[Dataset]:
    """Return one shard per client.

    ``iid`` is OpenFedLLM's: shuffle with ``seed``, then client i takes every num_clients-th row
    starting at i (``Dataset.shard``).
    """
    if strategy not in SPLIT_STRATEGIES:
        raise ValueError(f"--split_strategy {strategy!r} is unknown. Valid: {', '.join(SPLIT_STRATEGIES)}")
    if len(dataset) < num_clients:
        raise ValueError(f"the training set has {len(dataset)} examples, fewer than --num_clients {num_clients}")
    shuffled = dataset.shuffle(seed=seed)
    return [shuffled.shard(num_clients, i) for i in range(num_clients)]
