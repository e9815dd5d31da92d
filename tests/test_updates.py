"""The server's check of client updates: every malformed or hostile update is left out, for every algorithm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from config import FedArguments, RunConfig, ScriptArguments
from federated_learning import ClientUpdate, available_aggregators, get_aggregator
from federated_learning.aggregators._hyperparameters import VARIANTS
from federated_learning.build import build_round_loop
from federated_learning.state import get_state
from federated_learning.updates import rejection_reason, update_norm
from tests.peft_models import peft_model_with_active_lora
from tests.transport import uncompressed

X = {"a.lora_A.weight": torch.zeros(2, 4), "a.lora_B.weight": torch.ones(4, 2)}


def good(cid: int = 0, n: int = 10, **changes: Any) -> ClientUpdate:
    params = {k: v + 0.1 for k, v in X.items()}
    delta_c = {k: torch.zeros_like(v) for k, v in X.items()}
    update = ClientUpdate(cid, params, n, {"train_loss": 1.5}, {"delta_c": delta_c})
    for name, value in changes.items():
        setattr(update, name, value)
    return update


def with_param(key: str, value: Any) -> dict[str, Any]:
    return {**{k: v + 0.1 for k, v in X.items()}, key: value}


@pytest.mark.parametrize(("update", "reason"), [
    (good(params=with_param("a.lora_A.weight", torch.zeros(4))), "has shape (4,), the global adapter (2, 4)"),
    (good(params={"a.lora_A.weight": torch.zeros(2, 4)}), "lacks 1 keys, e.g. a.lora_B.weight"),
    (good(params=with_param("b.lora_A.weight", torch.zeros(2))), "has 1 unknown keys, e.g. b.lora_A.weight"),
    (good(params=with_param("a.lora_A.weight", torch.zeros(2, 4, dtype=torch.float64))), "dtype torch.float64"),
    (good(params=with_param("a.lora_A.weight", torch.zeros(2, 4, dtype=torch.int64))), "not a floating-point"),
    (good(params=with_param("a.lora_B.weight", torch.full((4, 2), float("nan")))), "NaN or Inf"),
    (good(params=with_param("a.lora_B.weight", [[1.0] * 2] * 4)), "is not a tensor"),
    (good(params=[1, 2]), "not a mapping"),
    (good(extras={"delta_c": {"a.lora_A.weight": torch.zeros(3)}}), "extras[delta_c][a.lora_A.weight] has shape"),
    (good(extras={"delta_c": {"a.lora_A.weight": torch.tensor([[float("inf")] * 4] * 2)}}), "NaN or Inf"),
    (good(n=0), "num_examples 0 is not a positive whole number"),
    (good(n=-5), "num_examples -5"),
    (good(n=True), "num_examples True"),
    (good(n=2.5), "num_examples 2.5"),
    (good(metrics={}), "train_loss None"),
    (good(metrics={"train_loss": float("nan")}), "train_loss nan"),
    (good(params=with_param("a.lora_A.weight", torch.zeros(2, 4).to_sparse())), "not a dense tensor"),
    (good(params=with_param("a.lora_A.weight", torch.zeros(2, 4, device="meta"))), "not a dense tensor"),
    (good(params=with_param("a.lora_A.weight", torch.full((2, 4), 3e38))), "float32 arithmetic can square"),
])
def test_malformed_updates_are_named(update: ClientUpdate, reason: str) -> None:
    got = rejection_reason(X, update)
    assert got is not None and reason in got


def test_required_extras_must_be_complete() -> None:
    """SCAFFOLD's delta_c: missing, or missing a key, is a rejection, not a crash of the aggregator."""
    assert rejection_reason(X, good(), required_extras=("delta_c",)) is None
    assert "extras lack delta_c" in rejection_reason(X, good(extras={}), required_extras=("delta_c",))
    partial = good(extras={"delta_c": {"a.lora_A.weight": torch.zeros(2, 4)}})
    assert "lacks 1 keys" in rejection_reason(X, partial, required_extras=("delta_c",))
    assert rejection_reason(X, partial) is None  # an optional extra may cover some keys


def test_only_numeric_metrics_reach_metrics_jsonl() -> None:
    from federated_learning.updates import numeric_metrics

    got = numeric_metrics({"train_loss": 1.5, "steps": 2, "t": torch.ones(1), "s": {1}, "nan": float("nan"),
                           "flag": True, 3: 1.0, "name": "x"})
    assert got == {"train_loss": 1.5, "steps": 2}


def test_counts_and_norms_within_bounds() -> None:
    assert rejection_reason(X, good()) is None
    assert rejection_reason(X, good(n=10), max_examples=10) is None
    assert "exceeds the 10 examples" in rejection_reason(X, good(n=10**12), max_examples=10)
    norm = update_norm(X, good().params)
    assert norm == pytest.approx(0.1 * (16**0.5))  # 16 entries, each moved by 0.1
    assert rejection_reason(X, good(), max_update_norm=norm * 1.01) is None
    assert "exceeds --max_update_norm" in rejection_reason(X, good(), max_update_norm=norm * 0.99)


def test_every_aggregator_refuses_bad_shapes_keys_and_counts_through_its_api() -> None:
    """Called directly (the Python API), no aggregator broadcasts a (4,) tensor into a (2, 4) adapter, takes other
    keys than its clients send, or a count that is not positive."""
    for name in [*available_aggregators(), "local0"]:
        for variant in VARIANTS:
            aggregator = get_aggregator(name, num_clients=4, fedopt_variant=variant)
            sent = aggregator.client_class.sent_keys(0, X)
            params = {k: X[k] + 0.1 for k in sent}
            wrong_keys = {k: v for k, v in params.items() if k != sent[0]} if len(sent) > 1 else {
                **params, "b.lora_A.weight": torch.zeros(2, 4)}
            bad = [good(params={**params, sent[0]: torch.zeros(4)}), good(params=wrong_keys),
                   good(params=params, n=0), good(params=params, n=-3)]
            for update in bad:
                with pytest.raises(ValueError):
                    aggregator.aggregate(X, [update], 1)


def _loop(tmp_path: Path, model_dir: Path, fed_alg: str, variant: str, replies: Any, **fed: Any) -> Any:
    model = peft_model_with_active_lora(model_dir)
    cfg = RunConfig("sft", ScriptArguments(seed=1), FedArguments(fed_alg=fed_alg, fedopt_variant=variant,
                                                                  num_clients=4, sample_clients=3, num_rounds=1,
                                                                  save_model_freq=5, **fed))
    loop = build_round_loop(cfg, model, None, [], tmp_path, None, client_runner=uncompressed(replies),
                            client_sizes={0: 10, 1: 10, 2: 10, 3: 10})
    return loop, get_state(loop.trainable)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fed_alg", [*available_aggregators(), "local1"])
def test_round_loop_leaves_bad_updates_out_and_records_why(
    tmp_path: Path, tiny_model_dir: Path, fed_alg: str, variant: str
) -> None:
    """Per round: one honest client, the others wrong-shaped, inflated or oversized; the honest one alone counts.

    Each client answers with the keys its algorithm sends (``ClientAlgorithm.sent_keys``) from its start state
    (and, for IFCA, names cluster 0, which its start is).
    """
    honest: dict[int, dict[str, torch.Tensor]] = {}

    def replies(aggregator: Any, tasks: Any, starts: Any) -> list[ClientUpdate]:
        updates = []
        for i, (task, start) in enumerate(zip(tasks, starts, strict=True)):
            sent = aggregator.client_class.sent_keys(task.server_round, start)
            params = {k: start[k] + 0.01 * (k.count("A") + 1) for k in sent}
            delta_c = {k: torch.full(start[k].shape, 0.5) for k in sent}
            if i == 0:
                honest[task.client_id] = params
                updates.append(ClientUpdate(task.client_id, params, 10, {"train_loss": 1.0, "cluster": 0},
                                            {"delta_c": delta_c}))
            elif i == 1:  # a (4,) tensor for a matrix, and 10^12 examples
                key = next(iter(params))
                updates.append(ClientUpdate(task.client_id, {**params, key: torch.zeros(4)}, 10**12,
                                            {"train_loss": 1.0, "cluster": 0}, {"delta_c": delta_c}))
            else:  # a huge update
                updates.append(ClientUpdate(task.client_id, {k: v * 1e6 for k, v in params.items()}, 10,
                                            {"train_loss": 1.0, "cluster": 0}, {"delta_c": delta_c}))
        return updates

    loop, start = _loop(tmp_path, tiny_model_dir, fed_alg, variant, replies, max_update_norm=5.0)
    final = loop.run()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    (cid,) = honest
    expected_aggregator = get_aggregator(fed_alg, num_clients=4, fedopt_variant=variant, seed=1)
    delta_c = {k: torch.full(v.shape, 0.5) for k, v in honest[cid].items()}
    expected = expected_aggregator.aggregate(start, [ClientUpdate(cid, honest[cid], 10, {"cluster": 0},
                                                                  {"delta_c": delta_c})], 1)
    assert final.keys() == expected.keys() == start.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert len(record.get("rejected_clients", [])) == len(record["clients"]) - 1
    reasons = [m["rejected"] for m in record["client_metrics"].values() if "rejected" in m]
    assert len(reasons) == len(record["clients"]) - 1
    if fed_alg != "local1":
        assert any("has shape (4,)" in r for r in reasons) and any("--max_update_norm 5" in r for r in reasons)


def test_uniform_weighting_is_the_plain_mean(tmp_path: Path, tiny_model_dir: Path) -> None:
    def replies(aggregator: Any, tasks: Any, starts: Any) -> list[ClientUpdate]:
        pairs = list(zip(tasks, starts, strict=True))
        return [ClientUpdate(t.client_id, {k: v + (1.0 if i else -1.0) for k, v in s.items()}, 1 + 8 * i,
                             {"train_loss": 1.0}) for i, (t, s) in enumerate(pairs[:2])] + [
            ClientUpdate(t.client_id, dict(s), 1, {"train_loss": 1.0}) for t, s in pairs[2:]]

    weighted, start = _loop(tmp_path / "w", tiny_model_dir, "fedavg", "paper", replies)
    (tmp_path / "w").mkdir()
    uniform, _ = _loop(tmp_path / "u", tiny_model_dir, "fedavg", "paper", replies, client_weighting="uniform")
    (tmp_path / "u").mkdir()
    w, u = weighted.run(), uniform.run()
    key = next(iter(start))
    # Uniform over 3 clients: (-1 + 1 + 0) / 3 = 0; weighted by 1, 9, 1: (-1 + 9) / 11.
    torch.testing.assert_close(u[key], start[key], rtol=0, atol=1e-6)
    torch.testing.assert_close(w[key], start[key] + 8 / 11, rtol=0, atol=1e-5)
