"""Per-client evaluation (--eval_per_client), Ditto and local fine-tuning (--personalize_steps)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import main_dpo
import main_sft
from evaluation.benchmarks.bundled_sentiment import BundledSentiment
from evaluation.client_eval import summarise
from evaluation.client_sets import client_eval_indices, client_mixes, quotas
from evaluation.registry import EvalSettings
from federated_learning.aggregators.ditto import DittoProximalStep
from federated_learning.aggregators.ifca import Ifca, IfcaClient
from federated_learning.export import export_personal
from federated_learning.partition import partition_indices
from federated_learning.types import ClientUpdate
from tests.test_algorithms_end_to_end import _data
from tests.test_dpo_end_to_end import argv as dpo_argv
from tests.test_dpo_end_to_end import write_pairs
from utils.sft_data import load_sft_dataset


# ------------------------------------------------------------------------------ held-out sets
def test_quotas_are_the_largest_remainders_of_the_mix() -> None:
    assert quotas({"a": 0.7, "b": 0.3}, 10) == {"a": 7, "b": 3}
    assert quotas({"a": 0.5, "b": 0.25, "c": 0.25}, 5) == {"a": 3, "b": 1, "c": 1}  # 2.5 / 1.25 / 1.25: a's .5 wins
    assert quotas({"a": 0.95, "b": 0.05}, 4) == {"a": 4}  # 3.8 / 0.2


def test_client_sets_follow_the_mix_without_repeats_and_are_seeded() -> None:
    values = ["a"] * 10 + ["b"] * 10
    sets = client_eval_indices(values, [{"a": 0.7, "b": 0.3}, {"b": 1.0}, {"a": 1.0}], 10, seed=1)
    assert Counter(values[i] for i in sets[0]) == {"a": 7, "b": 3}
    assert [values[i] for i in sets[1]] == ["b"] * 10 and [values[i] for i in sets[2]] == ["a"] * 10
    assert all(len(set(s.tolist())) == len(s) for s in sets)
    again = client_eval_indices(values, [{"a": 0.7, "b": 0.3}, {"b": 1.0}, {"a": 1.0}], 10, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(sets, again, strict=True))
    other = client_eval_indices(values, [{"a": 0.7, "b": 0.3}], 10, seed=2)
    assert not np.array_equal(sets[0], other[0])
    assert len(client_eval_indices(values, [{"a": 1.0}], 15, seed=1)[0]) == 10  # all the pool has


def test_a_client_whose_values_have_no_test_row_is_refused() -> None:
    with pytest.raises(ValueError, match="--eval_per_client: client 1's training values"):
        client_eval_indices(["a", "b"], [{"a": 1.0}, {"c": 1.0}], 2, seed=0)


def test_bundled_sentiment_sets_follow_each_clients_training_mix_and_are_not_training_rows() -> None:
    """The real bundled layout: train and test splits of bundled/fin_sentiment with their ``label`` column."""
    train = load_sft_dataset("bundled/fin_sentiment", None, 0, "train", 2023)
    partition = partition_indices(train, 4, "dirichlet", 2023, partition_column="label", alpha=0.3)
    mixes = client_mixes(train["label"], partition)
    examples, labels = BundledSentiment().load_groups(EvalSettings(seed=2023), "label")
    sets = client_eval_indices(labels, mixes, 40, seed=2023)
    training = set(train["instruction"])
    for mix, rows in zip(mixes, sets, strict=True):
        assert Counter(labels[i] for i in rows) == Counter(quotas(mix, 40))
        assert all(examples[i]["reference"] == labels[i] for i in rows)  # the value is the example's own row's
        assert not {examples[i]["instruction"] for i in rows} & training
    assert len({tuple(m) for m in mixes}) > 1 and mixes[0] != mixes[1]  # skewed clients, different sets


def test_held_out_rows_without_the_column_are_refused() -> None:
    with pytest.raises(ValueError, match="--partition_column 'group'"):
        BundledSentiment().load_groups(EvalSettings(), "group")


def test_summary_mean_worst_best_std_respect_the_metric_direction() -> None:
    scores = {0: {"eval_accuracy": 0.2, "eval_loss": 3.0, "eval_pa/x": 1.0},
              1: {"eval_accuracy": 0.6, "eval_loss": 1.0}, 2: {"eval_accuracy": 1.0, "eval_loss": 2.0}}
    summary = summarise("per_client_", scores, {"eval_loss"})
    assert summary["per_client_eval_accuracy_mean"] == pytest.approx(0.6)
    assert summary["per_client_eval_accuracy_worst"] == 0.2 and summary["per_client_eval_accuracy_best"] == 1.0
    assert summary["per_client_eval_accuracy_std"] == pytest.approx(np.std([0.2, 0.6, 1.0]))
    assert summary["per_client_eval_loss_worst"] == 3.0 and summary["per_client_eval_loss_best"] == 1.0
    assert not any("/" in key for key in summary)


# ------------------------------------------------------------------------------ Ditto's proximal step
def test_ditto_step_is_the_proximal_minimiser() -> None:
    v = torch.nn.Parameter(torch.tensor([1.0, -2.0, 4.0]))
    w = torch.tensor([0.0, 2.0, 1.0])
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.1, "params": [v]}])
    DittoProximalStep(5.0, {"x": w}, {"x": v}).on_optimizer_step(None, None, None, optimizer=optimizer)
    # argmin_u  λ/2 |u - w|² + 1/(2η) |u - v|²  =  (v + ηλ w) / (1 + ηλ),  ηλ = 0.5
    assert torch.allclose(v.detach(), (torch.tensor([1.0, -2.0, 4.0]) + 0.5 * w) / 1.5)


# ------------------------------------------------------------------------------ runs on the tiny model
SENTIMENT = ["--dataset_name", "bundled/fin_sentiment", "--dataset_sample", "300", "--split_strategy", "dirichlet",
             "--num_clients", "3", "--sample_clients", "3", "--seq_length", "96", "--eval_samples", "4"]


def _run(tmp_path: Path, model_dir: Path, name: str, *extra: str) -> Path:
    return main_sft.main([
        "--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "out"), "--run_name", name,
        "--num_rounds", "2", "--max_steps", "2", "--batch_size", "2", "--torch_threads", "1",
        "--learning_rate", "1e-2", "--bf16", "false", *SENTIMENT, *extra,
    ])


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _personal(checkpoint: Path, client: int) -> dict[str, torch.Tensor]:
    prefix = f"personal/states/{client}/"
    tensors = load_file(checkpoint / "federated_state.safetensors")
    return {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}


def _adapter(run_dir: Path, rounds: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"checkpoint-{rounds}" / "adapter_model.safetensors")


@pytest.mark.slow
def test_per_client_records_summaries_plot_and_finetuning(tmp_path: Path, tiny_model_dir: Path) -> None:
    flags = ["--eval_per_client", "5", "--eval_every", "1"]
    run = _run(tmp_path, tiny_model_dir, "tuned", *flags, "--personalize_steps", "3")
    records = [r for r in _records(run) if "eval_loss" in r]
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records:
        clients = record["per_client"]
        assert sorted(clients, key=int) == ["0", "1", "2"] and "personal" not in record  # FedAvg keeps nothing
        losses = [clients[c]["eval_loss"] for c in clients]
        assert record["per_client_eval_loss_mean"] == pytest.approx(np.mean(losses))
        assert record["per_client_eval_loss_worst"] == max(losses)
        assert record["per_client_eval_accuracy_worst"] == min(clients[c]["eval_accuracy"] for c in clients)
    assert ["finetuned" in r for r in records] == [False, False, True]
    final = records[-1]
    assert all(final["finetuned"][c]["eval_loss"] != final["per_client"][c]["eval_loss"] for c in "012")
    assert (run / "per_client_eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The fine-tuned adapters are scored, not kept: the run's adapter is the one it would have without them.
    plain = _run(tmp_path, tiny_model_dir, "plain", *flags)
    assert all(torch.equal(_adapter(run, 2)[k], t) for k, t in _adapter(plain, 2).items())
    assert [r["per_client"] for r in _records(plain) if "per_client" in r] == [r["per_client"] for r in records]


@pytest.mark.slow
def test_ditto_limits_global_pass_and_exact_resume(tmp_path: Path, tiny_model_dir: Path) -> None:
    fedavg = _run(tmp_path, tiny_model_dir, "fedavg")
    free = _run(tmp_path, tiny_model_dir, "free", "--fed_alg", "ditto", "--ditto_lambda", "0", "--save_model_freq", "1")
    # The global pass is FedAvg's local training, so the global adapter is FedAvg's, byte for byte.
    assert all(torch.equal(_adapter(free, 2)[k], t) for k, t in _adapter(fedavg, 2).items())
    # λ = 0: each client's personal adapter is its local-only training (local<K>: the same rows, seeds, rates).
    for client in range(3):
        local = _run(tmp_path, tiny_model_dir, f"local{client}", "--fed_alg", f"local{client}")
        own = _personal(free / "checkpoint-2", client)
        assert own.keys() == _adapter(local, 2).keys()
        assert all(torch.equal(own[k], t) for k, t in _adapter(local, 2).items()), client
    # λ -> ∞: the personal adapter stays at the global adapter each client received in its last round.
    held = _run(tmp_path, tiny_model_dir, "held", "--fed_alg", "ditto", "--ditto_lambda", "1e12",
                "--save_model_freq", "1", "--eval_per_client", "4")
    received = _adapter(held, 1)
    for client in range(3):
        own = _personal(held / "checkpoint-2", client)
        assert all(torch.allclose(own[k], t, atol=1e-6) for k, t in received.items())
        assert not all(torch.allclose(own[k], t, atol=1e-6) for k, t in _adapter(held, 2).items())
    final = _records(held)[-1]
    assert set(final["personal"]) == {"0", "1", "2"} and "personal_eval_loss_mean" in final
    with pytest.raises(ValueError, match="is a Ditto run, whose adapter file already is the global model"):
        export_personal(held / "checkpoint-2", tmp_path / "mean", "mean")
    exported = export_personal(held / "checkpoint-2", tmp_path / "own", "1")
    own = load_file(exported / "adapter_model.safetensors")
    assert all(torch.equal(own[k], t) for k, t in _personal(held / "checkpoint-2", 1).items())
    # Resume after round 1: the same global adapter and the same personal adapters, bit for bit.
    state, adapter = load_file(held / "checkpoint-2" / "federated_state.safetensors"), _adapter(held, 2)
    shutil.rmtree(held / "checkpoint-2")
    resumed = _run(tmp_path, tiny_model_dir, "held", "--fed_alg", "ditto", "--ditto_lambda", "1e12",
                   "--save_model_freq", "1", "--eval_per_client", "4", "--resume_from_checkpoint",
                   str(held / "checkpoint-1"))
    assert resumed == held
    again = load_file(held / "checkpoint-2" / "federated_state.safetensors")
    assert again.keys() == state.keys() and all(torch.equal(again[k], t) for k, t in state.items())
    assert all(torch.equal(_adapter(held, 2)[k], t) for k, t in adapter.items())
    assert _records(held)[-1]["personal"] == final["personal"]


@pytest.mark.slow
def test_ditto_dpo_with_a_natural_split_scores_each_group(tmp_path: Path, tiny_model_dir: Path) -> None:
    """DPO pairs with a ``category`` column in both splits; one client per category."""
    data = write_pairs(tmp_path / "pairs")
    run = main_dpo.main(dpo_argv(tmp_path, tiny_model_dir, data, "--fed_alg", "ditto", "--ditto_lambda", "1",
                                 "--split_strategy", "natural", "--partition_column", "category", "--num_clients",
                                 "2", "--eval_per_client", "4", "--personalize_steps", "1"))
    final = _records(run)[-1]
    for view in ("per_client", "personal", "finetuned"):
        assert set(final[view]) == {"0", "1"}
        assert f"{view}_eval_preference_accuracy_worst" in final
    ckpt = run / "checkpoint-2"
    assert _personal(ckpt, 0).keys() == _adapter(run, 2).keys()


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("flags", "message"), [
    (["--eval_per_client", "3", "--eval_samples", "0"], "--eval_per_client needs the round evaluation"),
    (["--personalize_steps", "2"], "--personalize_steps fine-tunes"),
    (["--eval_per_client", "-1"], "--eval_per_client must be 0"),
    (["--fed_alg", "ditto", "--ditto_lambda", "-1"], "--ditto_lambda must be >= 0"),
    (["--fed_alg", "ifca", "--ifca_clusters", "3", "--sample_clients", "2"], "--ifca_clusters 3 exceeds"),
    (["--fed_alg", "ifca", "--upload_codec", "bf16"], "--fed_alg ifca sends every cluster adapter uncompressed"),
])
def test_bad_flags_are_refused_before_any_work(tmp_path: Path, flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        main_sft.main(["--dataset_name", "bundled/fin_sentiment", "--output_dir", str(tmp_path), *flags])


@pytest.mark.slow
def test_per_client_evaluation_without_held_out_rows_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="every held-out row of heldout_loss is a training row"):
        main_sft.main(["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(_data(tmp_path)),
                       "--output_dir", str(tmp_path / "out"), "--num_clients", "2", "--eval_per_client", "3",
                       "--torch_threads", "1"])
    assert not list((tmp_path / "out").glob("*/checkpoint-*"))


# ------------------------------------------------------------------------------ IFCA
def _update(client: int, value: float, cluster: object, n: int = 1) -> ClientUpdate:
    return ClientUpdate(client, {"w": torch.full((2,), value)}, n, {"train_loss": 1.0, "cluster": cluster}, {})


def test_ifca_averages_within_clusters_and_keeps_the_unchosen_one() -> None:
    agg = Ifca(ifca_clusters=3)
    start = {"w": torch.zeros(2)}
    assert agg.client_start(0, 0, start) is agg.clusters[0] and set(agg.client_payload(0)) == {"cluster_1", "cluster_2"}
    updates = [_update(0, 1.0, 0, n=1), _update(1, 4.0, 0, n=3), _update(2, -2.0, 2)]
    new = agg.aggregate(start, updates, 1)
    assert torch.equal(new["w"], torch.full((2,), 3.25))  # (1·1 + 3·4) / 4: cluster 0, the majority's
    assert torch.equal(agg.clusters[0]["w"], torch.full((2,), 3.25))
    assert torch.equal(agg.clusters[1]["w"], torch.zeros(2))  # no client chose it
    assert torch.equal(agg.clusters[2]["w"], torch.full((2,), -2.0))
    assert agg.assignments == {0: 0, 1: 0, 2: 2} and torch.equal(agg.client_model(2)["w"], torch.full((2,), -2.0))
    assert agg.client_model(7) is None
    restored = Ifca(ifca_clusters=3)
    restored.load_state_dict(agg.state_dict())
    assert restored.assignments == agg.assignments
    assert all(torch.equal(a["w"], b["w"]) for a, b in zip(restored.clusters, agg.clusters, strict=True))
    with pytest.raises(ValueError, match="not --ifca_clusters 2"):
        Ifca(ifca_clusters=2).load_state_dict(agg.state_dict())
    # The loop's global adapter follows the clients: once most chose cluster 2 last, it is cluster 2's.
    later = agg.aggregate(new, [_update(0, 5.0, 2), _update(1, 7.0, 2)], 2)
    assert agg.majority() == 2 and torch.equal(later["w"], agg.clusters[2]["w"])


@pytest.mark.parametrize("cluster", [3, -1, 1.5, None, True, "0", float("nan"), float("inf")])
def test_ifca_refuses_a_reply_naming_no_cluster(cluster: object) -> None:
    agg = Ifca(ifca_clusters=3)
    agg.client_start(0, 0, {"w": torch.zeros(2)})
    assert isinstance(agg.reply_start(_update(0, 1.0, cluster), {"w": torch.zeros(2)}), str)
    assert agg.reply_start(_update(0, 1.0, 2.0), {"w": torch.zeros(2)}) is agg.clusters[2]


def test_ifca_client_picks_the_lowest_loss_and_breaks_ties_by_a_seeded_draw() -> None:
    client = IfcaClient()
    states = {"cluster_1": {"w": torch.ones(1)}, "cluster_2": {"w": torch.full((1,), 2.0)}}
    start = {"w": torch.zeros(1)}
    chosen, metrics = client.choose_start(start, states, lambda s: float((s["w"] - 1).abs()), 0, 0, 5)
    assert chosen is states["cluster_1"] and metrics["cluster"] == 1 and metrics["cluster_loss_2"] == 1.0

    def picks(seed: int) -> list[int]:
        return [client.choose_start(start, states, lambda s: 0.0, c, r, seed)[1]["cluster"]
                for c in range(6) for r in range(3)]

    assert set(picks(5)) == {0, 1, 2} and picks(5) == picks(5)  # ties spread over the clusters, seeded
    assert picks(5) != picks(6)  # by --seed
    assert client.choose_start(start, {}, lambda s: 1 / 0, 0, 0, 5) == (start, {"cluster": 0})  # K = 1: no loss


@pytest.mark.slow
def test_ifca_one_cluster_is_fedavg_and_two_clusters_resume_exactly(tmp_path: Path, tiny_model_dir: Path) -> None:
    fedavg = _run(tmp_path, tiny_model_dir, "fedavg")
    one = _run(tmp_path, tiny_model_dir, "one", "--fed_alg", "ifca", "--ifca_clusters", "1")
    assert all(torch.equal(_adapter(one, 2)[k], t) for k, t in _adapter(fedavg, 2).items())
    flags = ["--fed_alg", "ifca", "--ifca_clusters", "2", "--save_model_freq", "1", "--eval_per_client", "4"]
    two = _run(tmp_path, tiny_model_dir, "two", *flags)
    for record in _records(two)[1:]:
        for metrics in record["client_metrics"].values():
            losses = [metrics["cluster_loss_0"], metrics["cluster_loss_1"]]
            assert metrics["cluster"] in (0, 1) and losses[metrics["cluster"]] == min(losses)
    assert "personal" in _records(two)[-1]
    state = load_file(two / "checkpoint-2" / "federated_state.safetensors")
    assert {k.split("/")[2] for k in state if k.startswith("aggregator/clusters/")} == {"0", "1"}
    shutil.rmtree(two / "checkpoint-2")
    _run(tmp_path, tiny_model_dir, "two", *flags, "--resume_from_checkpoint", str(two / "checkpoint-1"))
    again = load_file(two / "checkpoint-2" / "federated_state.safetensors")
    assert again.keys() == state.keys() and all(torch.equal(again[k], t) for k, t in state.items())


@pytest.mark.slow
def test_ifca_dpo_rounds(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_pairs(tmp_path / "pairs")
    run = main_dpo.main(dpo_argv(tmp_path, tiny_model_dir, data, "--fed_alg", "ifca", "--ifca_clusters", "2"))
    clusters = [m["cluster"] for r in _records(run)[1:] for m in r["client_metrics"].values()]
    assert len(clusters) == 4 and set(clusters) <= {0, 1}


@pytest.mark.slow
def test_style_preferences_one_client_per_user_scored_on_its_own_group(tmp_path: Path, tiny_model_dir: Path) -> None:
    """bundled/style_preferences split naturally by user: each client's held-out set is its own user's pairs."""
    run = main_dpo.main(["--model_name_or_path", str(tiny_model_dir), "--dataset_name", "bundled/style_preferences",
                         "--split_strategy", "natural", "--partition_column", "user", "--num_clients", "10",
                         "--sample_clients", "2", "--num_rounds", "1", "--max_steps", "1", "--batch_size", "2",
                         "--seq_length", "128", "--torch_threads", "1", "--eval_samples", "20", "--eval_per_client",
                         "5", "--output_dir", str(tmp_path / "out"), "--bf16", "false"])
    final = _records(run)[-1]
    assert {"eval_preference_accuracy/group=concise", "eval_preference_accuracy/group=detailed"} <= final.keys()
    groups = [{k.split("=")[1] for k in scores if "/group=" in k} for scores in final["per_client"].values()]
    assert len(groups) == 10 and all(len(g) == 1 for g in groups)  # one user, so one group, per client
    assert sorted(g.pop() for g in groups) == ["concise"] * 5 + ["detailed"] * 5
    assert all(0 < scores["eval_pairs"] <= 5 for scores in final["per_client"].values())  # pairs scored


@pytest.mark.slow
def test_a_single_file_under_local_data_dir_and_an_unknown_column_are_refused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    _data(tmp_path)  # train.jsonl: one file is every split at once
    flags = ["--model_name_or_path", str(tiny_model_dir), "--local_data_dir", str(tmp_path), "--dataset_name",
             "train.jsonl", "--output_dir", str(tmp_path / "out"), "--num_clients", "2", "--eval_per_client", "3",
             "--torch_threads", "1"]
    with pytest.raises(ValueError, match="every held-out row of heldout_loss is a training row"):
        main_sft.main(flags)
    with pytest.raises(ValueError, match="--partition_column 'group' is not a column of the training set"):
        _run(tmp_path, tiny_model_dir, "unknown", "--eval_per_client", "3", "--split_strategy", "iid",
             "--partition_column", "group")


@pytest.mark.slow
def test_fedsa_lora_clients_are_scored_with_the_global_model_the_pooled_evaluation_scores(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """FedSA-LoRA's live adapter keeps LoRA's zero B (no client sends B): scored as it is, it is the base model."""
    run = _run(tmp_path, tiny_model_dir, "fedsa", "--fed_alg", "fedsa_lora", "--eval_per_client", "4")
    first, final = (r for r in _records(run) if "per_client" in r)
    assert final["per_client"] != first["per_client"]  # the mean B moved it
    assert final["personal"] != final["per_client"]


def test_the_loss_a_client_compares_clusters_by_depends_on_its_seed_only(tmp_path: Path,
                                                                         tiny_model_dir: Path) -> None:
    from federated_learning.cli import parse_run
    from federated_learning.run import prepare

    cfg = parse_run("sft", ["--model_name_or_path", str(tiny_model_dir), "--num_clients", "2", "--max_steps", "1",
                            "--batch_size", "2", "--torch_threads", "1", "--eval_samples", "0", "--seq_length", "96",
                            "--dataset_sample", "60", "--output_dir", str(tmp_path)])
    loop = prepare(cfg).loop
    rows = loop.shards[0].select(list(range(7)))
    torch.manual_seed(1)
    first = loop.local_trainer.loss(rows, 11)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    assert loop.local_trainer.loss(rows, 11) == first
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was
