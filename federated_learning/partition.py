"""Split a training set into client shards, kept as row indices into the run's one dataset.

A partition is one integer array per client (``partition_indices``): the run tokenises the whole
training set once and each client-round selects its rows from that one table (``ClientRows``), so
memory per client is its index array, whatever the number of clients.

``iid`` is OpenFedLLM's own split. The non-IID strategies are flwr-datasets partitioners applied
to the in-memory ``datasets.Dataset`` (``partitioner.dataset = ds``; ``load_partition(i)``), so
the partitioning schemes are Flower's, not re-implemented here:

* ``dirichlet``: label skew; each class is divided among clients in proportions drawn from
  Dirichlet(``alpha``) (Hsu et al., 2019). Smaller ``alpha`` -> each client sees fewer classes.
* ``natural``: one client per distinct value of ``partition_column`` (real client/user ids).
* ``shard``: McMahan et al.'s pathological split: rows sorted by ``partition_column``, cut into
  ``num_clients * shards_per_client`` equal shards, each client gets ``shards_per_client`` of
  them, so it sees only a few classes. The remainder rows (fewer than the number of shards) that
  do not fill a whole shard are left out, as in the original scheme.
* ``quantity``: quantity skew with IID labels; client sizes are drawn from Dirichlet(``alpha``)
  over clients (NIID-Bench's "quantity-based" skew, Li et al., 2022) with a floor of a few rows
  each, and Flower's ``SizePartitioner`` cuts the seeded-shuffled data into those sizes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    NaturalIdPartitioner,
    Partitioner,
    ShardPartitioner,
    SizePartitioner,
)

from config import SPLIT_STRATEGIES
from utils.constants import PROMPT_CUT, SOURCE_ROW

logger = logging.getLogger(__name__)

LABEL_STRATEGIES = frozenset({"dirichlet", "natural", "shard"})  # need --partition_column
MIN_CLIENT_EXAMPLES = 10  # floor of dirichlet / quantity client sizes, lowered for tiny datasets
DIRICHLET_RESTARTS = 20  # fresh DirichletPartitioners (of 11 draws each) before giving up


ROW_ID = "__fedllm_row__"
"""Column of row numbers attached while a partitioner runs, to read each partition back as indices."""



class ClientRows:
    """One client's rows of the run's tokenised dataset: ``len`` and ``select`` as on a ``Dataset``."""

    def __init__(self, dataset: Dataset, indices: np.ndarray) -> None:
        """``indices``: positions of the client's rows in ``dataset`` (shared by every client)."""
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, positions: Sequence[int]) -> Dataset:
        """The client's rows at ``positions`` (0 .. len - 1), as a ``Dataset``."""
        return self.dataset.select(self.indices[np.asarray(positions, dtype=np.int64)])

    def to_dataset(self) -> Dataset:
        """All of the client's rows, as a ``Dataset``."""
        return self.dataset.select(self.indices)


def client_rows(prepared: Dataset, partition: Sequence[np.ndarray], num_rows: int) -> list[ClientRows]:
    """Each client's rows of ``prepared``, the tokenisation of the ``num_rows`` rows the partition indexes.

    When the tokeniser dropped rows, ``prepared`` has a ``SOURCE_ROW`` column (the training-set index
    of every kept row) and a client keeps the rows of its partition that survived; otherwise row i
    of ``prepared`` is training row i. Returns views; ``prepared`` loses the ``SOURCE_ROW`` and
    ``PROMPT_CUT`` bookkeeping columns.
    """
    if PROMPT_CUT in prepared.column_names:
        prepared = prepared.remove_columns(PROMPT_CUT)
    if SOURCE_ROW in prepared.column_names:
        position = np.full(num_rows, -1, dtype=np.int64)
        position[np.asarray(prepared[SOURCE_ROW], dtype=np.int64)] = np.arange(len(prepared))
        prepared = prepared.remove_columns(SOURCE_ROW)
        kept = [position[rows] for rows in partition]
        return [ClientRows(prepared, rows[rows >= 0]) for rows in kept]
    if len(prepared) != num_rows:
        raise ValueError(f"tokenisation returned {len(prepared)} of {num_rows} rows without a {SOURCE_ROW!r} column")
    return [ClientRows(prepared, rows) for rows in partition]


def partition_indices(
    dataset: Dataset,
    num_clients: int,
    strategy: str = "iid",
    seed: int = 2023,
    *,
    partition_column: str = "label",
    alpha: float = 0.5,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Return each client's row indices into ``dataset`` (int64 arrays), as ``strategy`` says.

    ``iid`` is OpenFedLLM's: shuffle with ``seed``, then client i takes every num_clients-th row
    starting at i (``Dataset.shard``). Every strategy is deterministic given ``seed``.
    Raises ValueError naming the flag to change when the options do not fit the data.
    """
    _validate(dataset, num_clients, strategy, partition_column, alpha, shards_per_client)
    dataset = dataset.add_column(ROW_ID, np.arange(len(dataset), dtype=np.int64))
    if strategy == "iid":
        order = np.asarray(dataset.shuffle(seed=seed)[ROW_ID], dtype=np.int64)
        # Strided, as datasets 2.x's default shard did for OpenFedLLM (datasets >= 3: contiguous).
        return [order[i::num_clients] for i in range(num_clients)]
    if strategy == "dirichlet":
        return _dirichlet_split(dataset, num_clients, seed, partition_column, alpha)
    if strategy == "natural":
        return _load_all(NaturalIdPartitioner(partition_by=partition_column), dataset, num_clients)
    if strategy == "shard":
        partitioner = ShardPartitioner(
            num_partitions=num_clients, partition_by=partition_column, num_shards_per_partition=shards_per_client,
            seed=seed,
        )
        shards = _load_all(partitioner, dataset, num_clients)
        dropped = len(dataset) - sum(len(s) for s in shards)
        if dropped:
            logger.info("shard split left out %d rows that do not fill a whole shard", dropped)
        return shards
    # quantity: size partitions are contiguous index ranges, so shuffle first to make them random rows.
    sizes = _quantity_sizes(len(dataset), num_clients, alpha, seed)
    return _load_all(SizePartitioner(sizes), dataset.shuffle(seed=seed), num_clients)


def _load_all(partitioner: Partitioner, dataset: Dataset, num_clients: int) -> list[np.ndarray]:
    """Attach ``dataset`` to a fresh flwr-datasets partitioner; every client's partition as ``ROW_ID`` values."""
    partitioner.dataset = dataset
    with warnings.catch_warnings():
        # Flower warns on every Dirichlet re-draw that misses the minimum size (a final failure
        # is raised), and pyarrow on the options of the shard partitioner's sort.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return [np.asarray(partitioner.load_partition(i)[ROW_ID], dtype=np.int64) for i in range(num_clients)]


def _dirichlet_split(dataset: Dataset, num_clients: int, seed: int, column: str, alpha: float) -> list[np.ndarray]:
    """Flower's DirichletPartitioner, restarted with derived seeds when its draws leave a client too small.

    Flower redraws up to 10 times until every client holds ``min_partition_size`` rows (rejection
    sampling). With few classes, many clients and a small alpha most draws fail -- 3 classes, 10
    clients, alpha 0.1: ~6% succeed -- so several restarts keep such settings usable.
    """
    min_size = _min_client_examples(len(dataset), num_clients)
    for attempt in range(DIRICHLET_RESTARTS):
        # Derived seeds, not seed + attempt: seed s must never reuse the draws of seed s + 1.
        attempt_seed = seed if attempt == 0 else int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])
        partitioner = DirichletPartitioner(
            num_partitions=num_clients, partition_by=column, alpha=float(alpha), min_partition_size=min_size,
            self_balancing=False, seed=attempt_seed,
        )
        try:
            return _load_all(partitioner, dataset, num_clients)
        except ValueError as err:
            last_error = err
    raise ValueError(
        f"--split_strategy dirichlet could not give each of --num_clients {num_clients} clients at least {min_size} "
        f"of {len(dataset)} examples with --dirichlet_alpha {alpha} ({last_error}); raise --dirichlet_alpha, "
        "lower --num_clients or use more data (--dataset_sample)"
    ) from last_error


def _validate(
    dataset: Dataset, num_clients: int, strategy: str, partition_column: str, alpha: float, shards_per_client: int
) -> None:
    """Check the options against the data before any partitioner runs."""
    if strategy not in SPLIT_STRATEGIES:
        raise ValueError(f"--split_strategy {strategy!r} is unknown. Valid: {', '.join(SPLIT_STRATEGIES)}")
    if num_clients < 1:
        raise ValueError(f"--num_clients must be at least 1, got {num_clients}")
    if len(dataset) < num_clients:
        raise ValueError(
            f"the training set has {len(dataset)} examples, fewer than --num_clients {num_clients}; "
            "lower --num_clients or raise --dataset_sample"
        )
    if strategy in ("dirichlet", "quantity") and not alpha > 0:
        raise ValueError(f"--dirichlet_alpha must be positive for --split_strategy {strategy}, got {alpha}")
    if strategy not in LABEL_STRATEGIES:
        return
    if partition_column not in dataset.column_names:
        raise ValueError(
            f"--split_strategy {strategy} needs --partition_column {partition_column!r}, which the training set "
            f"lacks; its columns are {dataset.column_names} (bundled/fin_sentiment has 'label', "
            "bundled/arithmetic 'category')"
        )
    if None in dataset.unique(partition_column):
        raise ValueError(f"--partition_column {partition_column!r} has missing values; fill or drop those rows")
    if strategy == "natural":
        values = len(dataset.unique(partition_column))
        if values != num_clients:
            raise ValueError(
                f"--split_strategy natural makes one client per value of --partition_column {partition_column!r}, "
                f"which has {values} distinct values; set --num_clients {values}"
            )
    if strategy == "shard":
        if shards_per_client < 1:
            raise ValueError(f"--shards_per_client must be at least 1, got {shards_per_client}")
        if len(dataset) < num_clients * shards_per_client:
            raise ValueError(
                f"--split_strategy shard needs at least --num_clients x --shards_per_client = "
                f"{num_clients * shards_per_client} examples, the training set has {len(dataset)}"
            )


def _min_client_examples(num_examples: int, num_clients: int) -> int:
    """The smallest client a skewed split may produce: MIN_CLIENT_EXAMPLES, less for tiny datasets."""
    return max(1, min(MIN_CLIENT_EXAMPLES, num_examples // (2 * num_clients)))


def _quantity_sizes(num_examples: int, num_clients: int, alpha: float, seed: int) -> list[int]:
    """Client sizes summing to ``num_examples``: a floor each, the rest by Dirichlet(alpha) proportions."""
    rng = np.random.default_rng(seed)
    floor = _min_client_examples(num_examples, num_clients)
    proportions = rng.dirichlet(np.full(num_clients, float(alpha)))
    extra = rng.multinomial(num_examples - floor * num_clients, proportions)
    return [int(floor + e) for e in extra]
