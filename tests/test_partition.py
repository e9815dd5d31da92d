"""Client partitions: disjoint and complete, seeded, with measurable skew; the partition report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from datasets import Dataset

from federated_learning.partition import SOURCE_ROW, SPLIT_STRATEGIES, client_rows, partition_indices
from federated_learning.partition_report import describe_partition, label_histograms, mean_total_variation

LABELS = ("bear", "bull", "calm")
USERS = ("u0", "u1", "u2", "u3", "u4")


def make_dataset(num_rows: int = 600) -> Dataset:
    """Invented rows: an id to track them, a balanced label and a user id (natural client)."""
    return Dataset.from_dict({
        "id": list(range(num_rows)),
        "instruction": [f"question {i}" for i in range(num_rows)],
        "response": [LABELS[i % 3] for i in range(num_rows)],
        "label": [LABELS[i % 3] for i in range(num_rows)],
        "user": [USERS[(i * 7) % 5] for i in range(num_rows)],
    })


def ids(shards: list[Dataset]) -> list[list[int]]:
    return [list(s["id"]) for s in shards]


def split_dataset(data: Dataset, *args: object, **kw: object) -> list[Dataset]:
    """Each client's rows of ``data`` as a ``Dataset`` (``partition_indices``, then ``select``)."""
    partition = partition_indices(data, *args, **kw)
    assert all(rows.dtype == np.int64 for rows in partition)
    return [data.select(rows) for rows in partition]


def split(strategy: str, seed: int = 2023, num_clients: int = 10, data: Dataset | None = None, **kw: object):
    data = make_dataset() if data is None else data
    if strategy == "natural":
        num_clients, kw = len(USERS), {"partition_column": "user", **kw}
    return split_dataset(data, num_clients, strategy, seed, **kw)


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
def test_shards_are_disjoint_and_cover_the_data(strategy: str) -> None:
    shards = split(strategy)
    flat = [i for client in ids(shards) for i in client]
    assert len(flat) == len(set(flat)), "a row went to two clients"
    assert sorted(flat) == list(range(600)), "rows were lost (600 rows, 20 shards of 30: nothing to drop)"
    assert all(len(s) > 0 for s in shards)
    assert shards[0].column_names == make_dataset().column_names


@pytest.mark.parametrize("strategy", ["iid", "dirichlet", "shard", "quantity"])
def test_same_seed_same_split_other_seed_other_split(strategy: str) -> None:
    assert ids(split(strategy, seed=1)) == ids(split(strategy, seed=1))
    assert ids(split(strategy, seed=1)) != ids(split(strategy, seed=2))


def test_natural_is_seed_independent_one_client_per_value() -> None:
    shards = split("natural", seed=1)
    assert ids(shards) == ids(split("natural", seed=2))
    assert [s.unique("user") for s in shards] == [[u] for u in USERS]  # sorted values -> client ids
    assert [len(s) for s in shards] == [120] * 5


def test_iid_is_openfedllms_shuffle_then_strided_shard() -> None:
    data = make_dataset(103)
    shuffled = list(data.shuffle(seed=7)["id"])
    shards = split_dataset(data, 4, "iid", 7)
    assert ids(shards) == [shuffled[i::4] for i in range(4)]
    assert ids(shards) == [data.shuffle(seed=7).shard(4, i, contiguous=False)["id"] for i in range(4)]
    assert [len(s) for s in shards] == [26, 26, 26, 25]


def mean_tv(data: Dataset, *args: object, **kw: object) -> float:
    """Label skew of ``partition_indices(data, *args, **kw)``."""
    return mean_total_variation(label_histograms(data, partition_indices(data, *args, **kw), "label")[1])


def test_client_rows_select_from_one_shared_table() -> None:
    data = make_dataset(10)
    views = client_rows(data, [np.array([4, 1, 7]), np.array([0, 9])], len(data))
    assert [len(v) for v in views] == [3, 2]
    assert views[0].select([2, 0])["id"] == [7, 4]
    assert views[1].to_dataset()["id"] == [0, 9]
    assert views[0].dataset is views[1].dataset  # no per-client copy
    with pytest.raises(ValueError, match="9 of 10 rows"):
        client_rows(data.select(range(9)), [np.arange(10)], len(data))


def test_client_rows_follow_the_rows_a_tokeniser_kept() -> None:
    # The tokeniser kept training rows 0, 2, 3 and 5 of 6 (as tokenize_dpo reports with SOURCE_ROW).
    kept = Dataset.from_dict({"x": ["r0", "r2", "r3", "r5"], SOURCE_ROW: [0, 2, 3, 5]})
    views = client_rows(kept, [np.array([5, 1, 2]), np.array([4, 0, 3])], 6)
    assert [v.to_dataset()["x"] for v in views] == [["r5", "r2"], ["r0", "r3"]]
    assert views[0].dataset.column_names == ["x"]


def test_dirichlet_label_skew_grows_as_alpha_falls() -> None:
    data = make_dataset(3000)
    skew = {alpha: np.mean([mean_tv(data, 10, "dirichlet", s, alpha=alpha) for s in range(3)])
            for alpha in (100.0, 1.0, 0.1)}
    assert skew[100.0] < 0.08  # nearly IID
    assert skew[100.0] < skew[1.0] < skew[0.1]
    assert skew[0.1] > 0.4  # most clients dominated by one class (max possible 2/3)
    iid_skew = mean_tv(data, 10, "iid", 0)
    assert iid_skew < 0.08


def test_shard_gives_each_client_few_classes() -> None:
    shards = split("shard", shards_per_client=2)
    assert [len(s) for s in shards] == [60] * 10
    # 20 label-sorted shards of 30 rows; only the two shards that straddle a class edge (at rows
    # 200 and 400) hold two classes, so most clients see one or two of the three classes.
    assert sum(len(s.unique("label")) == 3 for s in shards) <= 2
    assert np.mean([len(s.unique("label")) for s in shards]) < 2.5
    assert mean_tv(make_dataset(), 10, "shard", 2023, shards_per_client=2) > 0.3


def test_shard_leaves_out_only_the_remainder() -> None:
    shards = split_dataset(make_dataset(605), 10, "shard", 0, shards_per_client=2)
    flat = [i for client in ids(shards) for i in client]
    assert len(flat) == len(set(flat)) == 600  # 605 rows -> 20 shards of 30, 5 rows left out


def test_quantity_skews_sizes_not_labels() -> None:
    data = make_dataset(3000)
    sizes = {a: [len(s) for s in split_dataset(data, 10, "quantity", 3, alpha=a)] for a in (100.0, 0.3)}
    assert sum(sizes[0.3]) == sum(sizes[100.0]) == 3000
    assert min(sizes[0.3]) >= 10
    assert np.std(sizes[100.0]) / np.mean(sizes[100.0]) < 0.2
    assert np.std(sizes[0.3]) / np.mean(sizes[0.3]) > 0.5
    # Rows are taken at random, so large clients keep the pooled label mix.
    assert mean_tv(data, 10, "quantity", 3, alpha=100.0) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "pathological"}, "--split_strategy 'pathological' is unknown"),
        ({"strategy": "dirichlet", "partition_column": "topic"}, "--partition_column 'topic'"),
        ({"strategy": "shard", "partition_column": "topic"}, "columns are"),
        ({"strategy": "dirichlet", "alpha": 0.0}, "--dirichlet_alpha must be positive"),
        ({"strategy": "quantity", "alpha": -1.0}, "--dirichlet_alpha must be positive"),
        ({"strategy": "natural", "partition_column": "user"}, "set --num_clients 5"),
        ({"strategy": "iid", "num_clients": 601}, "fewer than --num_clients 601"),
        ({"strategy": "shard", "num_clients": 400, "shards_per_client": 2}, "--shards_per_client"),
        ({"strategy": "shard", "shards_per_client": 0}, "--shards_per_client must be at least 1"),
        ({"strategy": "dirichlet", "alpha": 1e-4}, "raise --dirichlet_alpha"),
    ],
)
def test_bad_options_raise_naming_the_flag(kwargs: dict, message: str) -> None:
    kwargs = {"num_clients": 10, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        split_dataset(make_dataset(), kwargs.pop("num_clients"), kwargs.pop("strategy"), 0, **kwargs)


def test_mean_total_variation_by_hand() -> None:
    assert mean_total_variation(np.array([[10, 0], [0, 10]])) == pytest.approx(0.5)
    assert mean_total_variation(np.array([[5, 5], [3, 3]])) == pytest.approx(0.0)
    # pooled (9, 3)/12 = (.75, .25); client mixes (1, 0) and (.5, .5): TV .25 and .25
    assert mean_total_variation(np.array([[6, 0], [3, 3]])) == pytest.approx(0.25)
    assert mean_total_variation(np.array([[0, 0], [4, 0]])) == pytest.approx(0.0)  # empty client skipped


def test_describe_partition_writes_json_and_png(tmp_path) -> None:
    data = make_dataset()
    shards = split_dataset(data, 4, "shard", 0, shards_per_client=1)
    report = describe_partition(data, partition_indices(data, 4, "shard", 0, shards_per_client=1), "label", tmp_path)
    saved = json.loads((tmp_path / "partition.json").read_text())
    assert saved == report
    assert saved["sizes"] == [150] * 4
    assert saved["labels"] == list(LABELS)
    for shard, histogram in zip(shards, saved["histograms"], strict=True):
        assert histogram == {label: list(shard["label"]).count(label) for label in LABELS}
    assert saved["global_histogram"] == {label: 200 for label in LABELS}
    assert saved["mean_total_variation"] > 0.3
    png = (tmp_path / "partition.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_describe_partition_of_many_clients_draws_steps_not_bars(tmp_path, monkeypatch) -> None:
    import matplotlib.axes

    calls = {"bar": 0, "stairs": 0}
    for name in calls:
        original = getattr(matplotlib.axes.Axes, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, name, counted)
    data = make_dataset()
    report = describe_partition(data, partition_indices(data, 150, "iid", 0), "label", tmp_path)
    assert calls == {"bar": 0, "stairs": 3}  # one filled step curve per label, whatever the number of clients
    assert report["sizes"] == [4] * 150
    assert (tmp_path / "partition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_describe_partition_without_the_column_reports_sizes(tmp_path) -> None:
    data = make_dataset().remove_columns("label")
    report = describe_partition(data, partition_indices(data, 3, "iid", 0), "label", tmp_path)
    assert report["sizes"] == [200] * 3 and report["labels"] == [] and report["column"] is None
    assert (tmp_path / "partition.png").stat().st_size > 0
