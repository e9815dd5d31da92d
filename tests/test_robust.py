"""Robust aggregation: coordinate-wise median and trimmed mean (Yin et al., 2018), Krum and Multi-Krum
(Blanchard et al., 2017), norm bounding (Sun et al., 2019), and the simulated attacks that test them.

Every expected value is worked out by hand in the comment beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import main_sft
from config import FedArguments, RunConfig, ScriptArguments
from federated_learning import ClientUpdate, get_aggregator
from federated_learning.attacks import Attack
from federated_learning.build import build_round_loop
from federated_learning.cli import parse_run
from federated_learning.state import get_state
from federated_learning.updates import clip_update, update_norm
from flower_app.server_app import refuse_simulation_only
from tests.peft_models import peft_model_with_active_lora
from tests.test_algorithms_end_to_end import _data
from tests.transport import uncompressed

ROBUST = ("fedmedian", "fedtrimmedavg", "krum", "multikrum")


def _updates(values: list[float], ids: list[int] | None = None, counts: list[int] | None = None,
             ) -> list[ClientUpdate]:
    """One client per value: its adapter {"w": [v, -v]} (B in bf16: {"b": [v]})."""
    ids = ids or list(range(len(values)))
    counts = counts or [1] * len(values)
    return [ClientUpdate(cid, {"w": torch.tensor([v, -v]), "b": torch.tensor([v], dtype=torch.bfloat16)}, n,
                         {"train_loss": 1.0}) for cid, v, n in zip(ids, values, counts, strict=True)]


X = {"w": torch.zeros(2), "b": torch.zeros(1, dtype=torch.bfloat16)}


def _w(state: dict[str, torch.Tensor]) -> list[float]:
    return state["w"].tolist()


# ------------------------------------------------------------------------------ median and trimmed mean
def test_median_is_the_middle_value_and_ignores_counts() -> None:
    agg = get_aggregator("fedmedian")
    out = agg.aggregate(X, _updates([1.0, 100.0, 5.0], counts=[1, 1000, 1]), 1)
    assert _w(out) == [5.0, -5.0]  # sorted 1, 5, 100: the middle one; client 1's 1000 examples weigh nothing
    assert out["b"].dtype == torch.bfloat16 and out["b"].item() == 5.0
    out = agg.aggregate(X, _updates([1.0, 2.0, 3.0, 100.0]), 1)
    assert _w(out) == [2.5, -2.5]  # even n: the mean of the two middle values, (2 + 3) / 2


def test_trimmed_mean_leaves_out_floor_beta_n_at_each_end() -> None:
    out = get_aggregator("fedtrimmedavg", trim_fraction=0.2).aggregate(X, _updates([0.0, 1.0, 2.0, 3.0, 100.0]), 1)
    assert _w(out) == [2.0, -2.0]  # floor(0.2·5) = 1 each side: mean(1, 2, 3)
    out = get_aggregator("fedtrimmedavg", trim_fraction=0.4).aggregate(X, _updates([0.0, 1.0, 2.0, 3.0, 100.0]), 1)
    assert _w(out) == [2.0, -2.0]  # floor(0.4·5) = 2 each side: the median
    out = get_aggregator("fedtrimmedavg", trim_fraction=0.4999999999).aggregate(X, _updates([1.0, 3.0]), 1)
    assert _w(out) == [2.0, -2.0]  # a β a hair below 0.5 still leaves a value: k = min(floor(βn), (n - 1) // 2) = 0
    agg = get_aggregator("fedtrimmedavg", trim_fraction=0.0)
    out = agg.aggregate(X, _updates([0.0, 1.0, 8.0], counts=[5, 1, 1]), 1)
    assert _w(out) == [3.0, -3.0]  # beta 0: the unweighted mean (0 + 1 + 8) / 3, whatever the counts
    assert agg.round_record() == {"trimmed_per_side": 0}


def test_coordinate_wise_means_each_coordinate_on_its_own() -> None:
    """Per coordinate, not per client: the first coordinate's outlier is client 0, the second's client 2."""
    rows = [[50.0, 1.0], [2.0, 2.0], [3.0, -40.0]]
    updates = [ClientUpdate(cid, {"w": torch.tensor(row)}, 1, {}) for cid, row in enumerate(rows)]
    out = get_aggregator("fedmedian").aggregate({"w": torch.zeros(2)}, updates, 1)
    assert out["w"].tolist() == [3.0, 1.0]


# ------------------------------------------------------------------------------ Krum
def test_krum_picks_the_client_closest_to_its_neighbours() -> None:
    # 1-d adapters 0, 1, 2, 3, 50 (ids 10..14), f = 1: n - f - 2 = 2 neighbours, squared distances (w has v and -v,
    # so each is 2(vi - vj)^2 + (vi - vj)^2 from b = 3(vi - vj)^2):
    #   client 10: 3(1 + 4) = 15; 11: 3(1 + 1) = 6; 12: 3(1 + 1) = 6; 13: 3(1 + 4) = 15; 14: 3(47^2 + 48^2) = 13539
    # The tie between 11 and 12 goes to the one sampled first, 11.
    agg = get_aggregator("krum", num_malicious=1)
    out = agg.aggregate(X, _updates([0.0, 1.0, 2.0, 3.0, 50.0], ids=[10, 11, 12, 13, 14]), 1)
    assert _w(out) == [1.0, -1.0]
    record = agg.round_record()
    assert record["selected_clients"] == [11]
    assert record["scores"] == pytest.approx({"10": 15.0, "11": 6.0, "12": 6.0, "13": 15.0, "14": 13539.0})


def test_multikrum_averages_the_n_minus_f_best() -> None:
    # The same scores: the n - f = 4 best are 11, 12, 10, 13 (adapters 1, 2, 0, 3): mean 1.5; the outlier is out.
    agg = get_aggregator("multikrum", num_malicious=1)
    out = agg.aggregate(X, _updates([0.0, 1.0, 2.0, 3.0, 50.0], ids=[10, 11, 12, 13, 14], counts=[1, 1, 1, 1, 99]), 1)
    assert _w(out) == [1.5, -1.5]
    assert agg.round_record()["selected_clients"] == [11, 12, 10, 13]
    # f = 0 keeps everyone: the unweighted mean (0 + 1 + 2 + 3 + 50) / 5 = 11.2.
    out = get_aggregator("multikrum").aggregate(X, _updates([0.0, 1.0, 2.0, 3.0, 50.0]), 1)
    assert _w(out) == pytest.approx([11.2, -11.2])


def test_krum_with_fewer_replies_than_planned() -> None:
    """n = 2 (a round of rejections): max(1, n - f - 2) = 1 neighbour, equal scores, the first client; n = 1: it."""
    agg = get_aggregator("krum", num_malicious=1)
    assert _w(agg.aggregate(X, _updates([4.0, 7.0]), 1)) == [4.0, -4.0]
    assert _w(agg.aggregate(X, _updates([7.0]), 1)) == [7.0, -7.0]


@pytest.mark.parametrize("name", ROBUST)
def test_one_huge_update_cannot_drag_the_global_away(name: str) -> None:
    """Four honest clients near 1 and one at 1e6: every robust rule stays within the honest values."""
    agg = get_aggregator(name, num_malicious=1, trim_fraction=0.2)
    out = agg.aggregate(X, _updates([0.9, 1.0, 1.1, 1.2, 1e6]), 1)
    assert 0.9 <= out["w"][0].item() <= 1.2
    assert get_aggregator("fedavg").aggregate(X, _updates([0.9, 1.0, 1.1, 1.2, 1e6]), 1)["w"][0].item() > 1e5


@pytest.mark.parametrize("name", ROBUST)
def test_bad_updates_are_refused_through_the_api(name: str) -> None:
    agg = get_aggregator(name)
    with pytest.raises(ValueError, match="shape"):
        agg.aggregate(X, [ClientUpdate(0, {"w": torch.zeros(3), "b": X["b"]}, 1, {})], 1)
    with pytest.raises(ValueError, match="without client updates"):
        agg.aggregate(X, [], 1)
    with pytest.raises(ValueError, match="two updates"):
        agg.aggregate(X, _updates([1.0, 2.0], ids=[3, 3]), 1)


@pytest.mark.parametrize(("name", "hp", "message"), [
    ("fedtrimmedavg", {"trim_fraction": 0.5}, "--trim_fraction must be in"),
    ("fedtrimmedavg", {"trim_fraction": -0.1}, "--trim_fraction must be in"),
    ("krum", {"num_malicious": -1}, "--num_malicious must be a whole number"),
    ("multikrum", {"num_malicious": 1.5}, "--num_malicious must be a whole number"),
])
def test_hyperparameter_ranges(name: str, hp: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_aggregator(name, **hp)


# ------------------------------------------------------------------------------ norm bounding
def test_clip_scales_the_update_to_the_bound() -> None:
    x = {"w": torch.tensor([1.0, 1.0])}
    update = ClientUpdate(0, {"w": torch.tensor([4.0, 5.0])}, 3, {"train_loss": 1.0}, {"delta_c": {}})
    clipped, norm = clip_update(x, update, 1.0)
    assert norm == 5.0  # Δ = (3, 4)
    assert clipped.params["w"].tolist() == pytest.approx([1.6, 1.8])  # x + (3, 4) / 5
    assert (clipped.client_id, clipped.num_examples, clipped.extras) == (0, 3, {"delta_c": {}})
    same, norm = clip_update(x, update, 5.0)
    assert same is update and norm == 5.0


def _loop(tmp_path: Path, model_dir: Path, replies: Any, **fed: Any) -> Any:
    model = peft_model_with_active_lora(model_dir)
    cfg = RunConfig("sft", ScriptArguments(seed=1), FedArguments(num_clients=3, sample_clients=3, num_rounds=1,
                                                                  save_model_freq=5, **fed))
    loop = build_round_loop(cfg, model, None, [], tmp_path, None, client_runner=uncompressed(replies),
                            client_sizes={0: 10, 1: 10, 2: 10})
    return loop, get_state(loop.trainable)


def test_round_loop_clips_long_updates_and_records_them(tmp_path: Path, tiny_model_dir: Path) -> None:
    """--update_norm_bound clip: a long update is scaled to C and aggregated (FedAvg of the clipped), not left out."""
    sent: dict[int, dict[str, torch.Tensor]] = {}

    def replies(aggregator: Any, tasks: Any, starts: Any) -> list[ClientUpdate]:
        for i, (task, start) in enumerate(zip(tasks, starts, strict=True)):
            sent[task.client_id] = {k: v + (0.001 if i < 2 else 10.0) for k, v in start.items()}
        # Every client also claims the server's own per-client records: they are dropped.
        return [ClientUpdate(t.client_id, sent[t.client_id], 10, {"train_loss": 1.0, "failed": 1.0,
                                                                    "clipped_from_norm": 7.0}) for t in tasks]

    loop, start = _loop(tmp_path, tiny_model_dir, replies, max_update_norm=1.0, update_norm_bound="clip")
    final = loop.run()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    (long_client,) = [cid for cid, p in sent.items() if update_norm(start, p) > 1.0]
    assert record["clipped_clients"] == [long_client] and "rejected_clients" not in record
    assert "failed_clients" not in record  # a client's own "failed" metric is not the server's record
    assert record["client_metrics"][str(long_client)]["clipped_from_norm"] == pytest.approx(update_norm(
        start, sent[long_client]))
    expected = get_aggregator("fedavg").aggregate(start, [
        clip_update(start, ClientUpdate(cid, p, 10, {}), 1.0)[0] for cid, p in sorted(sent.items())], 1)
    assert all(torch.allclose(final[k], expected[k], atol=1e-7) for k in expected)
    assert update_norm(start, final) <= 1.0 + 1e-6


# ------------------------------------------------------------------------------ attacks
def _honest() -> tuple[dict[str, torch.Tensor], ClientUpdate]:
    start = {"w": torch.tensor([1.0, 1.0]), "v": torch.tensor([0.0])}
    return start, ClientUpdate(2, {"w": torch.tensor([1.5, 0.0]), "v": torch.tensor([2.0])}, 4, {"train_loss": 1.0})


def test_scale_and_sign_flip_attacks() -> None:
    start, update = _honest()  # Δ = (0.5, -1), (2)
    scaled = Attack("scale", frozenset({2}), 10.0, 0).apply(update, start, 0)
    assert scaled.params["w"].tolist() == [6.0, -9.0] and scaled.params["v"].tolist() == [20.0]
    flipped = Attack("sign_flip", frozenset({2}), 1.0, 0).apply(update, start, 0)
    assert flipped.params["w"].tolist() == [0.5, 2.0] and flipped.params["v"].tolist() == [-2.0]
    assert (flipped.num_examples, flipped.metrics) == (4, {"train_loss": 1.0})
    assert Attack("scale", frozenset({0}), 10.0, 0).apply(update, start, 0) is update  # an honest client


def test_random_attack_has_the_scaled_norm_and_is_seeded() -> None:
    start, update = _honest()  # ||Δ|| = sqrt(0.25 + 1 + 4) = sqrt(5.25)
    attack = Attack("random", frozenset({2}), 3.0, seed=7)
    noisy = attack.apply(update, start, 1)
    assert update_norm(start, noisy.params) == pytest.approx(3.0 * math.sqrt(5.25), rel=1e-6)
    again = attack.apply(update, start, 1)
    assert all(torch.equal(noisy.params[k], again.params[k]) for k in start)
    other_round = attack.apply(update, start, 2)
    assert not torch.equal(noisy.params["w"], other_round.params["w"])


# ------------------------------------------------------------------------------ flags
@pytest.mark.parametrize(("flags", "message"), [
    (["--fed_alg", "krum", "--sample_clients", "4", "--num_clients", "5", "--num_malicious", "1"],
     r"needs --sample_clients > 2 --num_malicious \+ 2 .* got 4 clients for f = 1; sample at least 5"),
    (["--fed_alg", "multikrum", "--sample_clients", "2"], "sample at least 3"),
    (["--fed_alg", "fedtrimmedavg", "--sample_clients", "4", "--num_clients", "5"],
     "--trim_fraction 0.2 of --sample_clients 4 trims nothing .* sample at least 5 clients"),
    (["--fed_alg", "fedtrimmedavg", "--trim_fraction", "0.5"], "--trim_fraction must be in"),
    (["--update_norm_bound", "clip"], "--update_norm_bound clip needs the bound"),
    (["--update_norm_bound", "scale", "--max_update_norm", "1"], "--update_norm_bound"),
    (["--attack", "flip"], "--attack"),
    (["--attack", "scale", "--attack_clients", "0,9", "--num_clients", "2", "--sample_clients", "2"],
     "--attack_clients '0,9': ids must be 0 .. 1"),
    (["--attack", "scale", "--attack_clients", "a"], "--attack_clients 'a': give client ids"),
    (["--attack", "scale", "--attack_scale", "0"], "--attack_scale must be a positive number"),
    (["--attack", "random", "--fed_alg", "ifca"], "--attack: IFCA's clients"),
    (["--min_fit_clients", "3", "--sample_clients", "2"], "--min_fit_clients must be from 1 to --sample_clients 2"),
    (["--min_fit_clients", "0"], "--min_fit_clients must be from 1"),
])
def test_bad_flags_are_refused_before_any_work(tmp_path: Path, flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        main_sft.main(["--dataset_name", "bundled/fin_sentiment", "--output_dir", str(tmp_path), *flags])


def test_flower_refuses_the_simulated_attack(tmp_path: Path) -> None:
    cfg = parse_run("sft", ["--output_dir", str(tmp_path), "--attack", "scale"])
    with pytest.raises(ValueError, match="--attack scale: the simulated poisoning runs in the simulation"):
        refuse_simulation_only(cfg)
    refuse_simulation_only(parse_run("sft", ["--output_dir", str(tmp_path), "--fed_alg", "krum",
                                             "--sample_clients", "2"]))  # an aggregator is fine (flags aside)


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_krum_leaves_the_scaled_attacker_out(tmp_path: Path, tiny_model_dir: Path) -> None:
    """5 clients, all sampled, client 0 sends 10x its update: Krum never selects it, and metrics.jsonl says so."""
    run = main_sft.main(["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(_data(tmp_path)),
                         "--output_dir", str(tmp_path / "out"), "--num_clients", "5", "--sample_clients", "5",
                         "--num_rounds", "2", "--max_steps", "2", "--batch_size", "2", "--seq_length", "48",
                         "--torch_threads", "1", "--eval_samples", "2", "--learning_rate", "1e-2",
                         "--fed_alg", "krum", "--num_malicious", "1", "--attack", "scale", "--attack_clients", "0"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
    assert [r["round"] for r in records] == [1, 2]
    for record in records:
        selected = record["aggregation"]["selected_clients"]
        assert len(selected) == 1 and selected != [0]
        scores = record["aggregation"]["scores"]
        assert scores["0"] == max(scores.values())
