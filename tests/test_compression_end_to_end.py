"""Codecs through main_sft / main_dpo on the tiny model: bytes as encoded, exact resume with error feedback,
the communication budget, and every algorithm with a lossy upload."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import main_dpo
from federated_learning.aggregators import available_aggregators
from tests.test_algorithms_end_to_end import _run
from tests.test_dpo_end_to_end import argv as dpo_argv
from tests.test_dpo_end_to_end import write_pairs
from tests.test_robust import ROBUST

pytestmark = pytest.mark.slow

FILES = ("adapter_model.safetensors", "federated_state.safetensors", "federated_state.json")


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_bytes_are_the_encoded_sizes_and_the_total_adds_up(tmp_path: Path, tiny_model_dir: Path) -> None:
    """int8 up (1 byte a value + a float32 scale per row), bf16 down (2 bytes a value); bytes_total is cumulative."""
    run = _run(tmp_path, tiny_model_dir, "int8", "--upload_codec", "int8", "--int8_scale", "row",
               "--download_codec", "bf16")
    adapter = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    up = sum(t.numel() + 4 * t.shape[0] for t in adapter.values())
    down = sum(2 * t.numel() for t in adapter.values())
    total = 0
    for record in _records(run)[1:]:
        for metrics in record["client_metrics"].values():
            assert (metrics["bytes_uploaded"], metrics["bytes_downloaded"]) == (up, down)
            total += up + down
        assert record["bytes_total"] == total
    state = json.loads((run / "checkpoint-2" / "federated_state.json").read_text())
    assert (state["bytes_sent/uploaded"], state["bytes_sent/downloaded"]) == (4 * up, 4 * down)  # for a resume


@pytest.mark.parametrize("extra", [
    ["--upload_codec", "topk", "--topk_fraction", "0.05"],
    ["--upload_codec", "int8", "--stochastic_rounding", "true", "--download_codec", "int8"],
])
def test_resume_with_codecs_is_byte_identical(tmp_path: Path, tiny_model_dir: Path, extra: list[str]) -> None:
    """3 rounds straight vs 1 round + resume: adapters, server state (top-k's residuals in it) and bytes equal."""
    flags = ["--num_rounds", "3", "--save_model_freq", "1", *extra]
    full = _run(tmp_path, tiny_model_dir, "full", *flags)
    state = load_file(full / "checkpoint-3" / "federated_state.safetensors")
    residuals = [k for k in state if k.startswith("residuals/")]
    assert bool(residuals) == ("topk" in extra)
    assert all(state[k].abs().sum() > 0 for k in residuals)
    resumed = tmp_path / "out" / "resumed"
    resumed.mkdir(parents=True)
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    _run(tmp_path, tiny_model_dir, "resumed", *flags, "--resume_from_checkpoint", str(resumed / "checkpoint-1"))
    for name in FILES:
        assert (full / "checkpoint-3" / name).read_bytes() == (resumed / "checkpoint-3" / name).read_bytes(), name
    assert _records(full)[-1]["bytes_total"] == _records(resumed)[-1]["bytes_total"]


def test_a_top_k_client_sends_k_values_per_tensor(tmp_path: Path, tiny_model_dir: Path) -> None:
    run = _run(tmp_path, tiny_model_dir, "topk", "--upload_codec", "topk", "--topk_fraction", "0.05")
    adapter = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    expected = sum(8 * math.ceil(0.05 * t.numel()) for t in adapter.values())
    assert {m["bytes_uploaded"] for r in _records(run)[1:] for m in r["client_metrics"].values()} == {expected}


def test_the_budget_stops_before_a_round_would_exceed_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A round of 2 clients moves 4 adapters (2 down, 2 up); a budget of 2.5 rounds stops after round 2 with a
    checkpoint, an evaluation and a record saying why, and never spends more than the budget."""
    probe = _run(tmp_path, tiny_model_dir, "probe", "--num_rounds", "1")
    round_bytes = _records(probe)[1]["bytes_total"]
    budget_mb = 2.5 * round_bytes / 1e6
    run = _run(tmp_path, tiny_model_dir, "budget", "--num_rounds", "4", "--comm_budget_mb", str(budget_mb))
    records = _records(run)
    stop = records[-1]
    assert stop["stopped"] == "comm_budget" and stop["round"] == 2
    assert stop["bytes_total"] == 2 * round_bytes <= budget_mb * 1e6 < 3 * round_bytes
    assert stop["next_round_bytes"] == round_bytes  # the prediction is the real cost of a round
    assert "eval_loss" in stop
    assert (run / "checkpoint-2" / "adapter_model.safetensors").exists()
    assert not (run / "checkpoint-3").exists() and [r["round"] for r in records[1:-1]] == [1, 2]
    # With round 2 evaluated by --eval_every, the stop does not evaluate it again.
    again = _run(tmp_path, tiny_model_dir, "every2", "--num_rounds", "4", "--comm_budget_mb", str(budget_mb),
                 "--eval_every", "2")
    records = _records(again)
    assert "eval_loss" in records[-2] and "eval_loss" not in records[-1] and records[-1]["stopped"] == "comm_budget"


# IFCA refuses codecs (its clusters travel uncompressed; tests/test_personalization.py).
@pytest.mark.parametrize("fed_alg", [*(a for a in available_aggregators() if a != "ifca"), "local1"])
def test_every_algorithm_runs_with_a_lossy_upload(tmp_path: Path, tiny_model_dir: Path, fed_alg: str) -> None:
    """Each registered aggregator (and local-only) with int8 up and fp16 down: 2 SFT rounds, every update
    accepted, bytes below the uncompressed ones."""
    extra = ["--client_lora_ranks", "2,4,8"] if fed_alg in ("flora", "flexlora", "hetlora") else []
    if fed_alg in ROBUST:  # Krum needs n > 2f + 2 clients a round; the trimmed mean, some to trim
        extra = ["--sample_clients", "3", "--trim_fraction", "0.34"]
    run = _run(tmp_path, tiny_model_dir, fed_alg, "--fed_alg", fed_alg, "--upload_codec", "int8",
               "--download_codec", "fp16", *extra)
    adapter = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    full_size = sum(4 * t.numel() for t in adapter.values())
    for record in _records(run)[1:]:
        assert "rejected_clients" not in record
        for metrics in record["client_metrics"].values():
            assert metrics["bytes_uploaded"] < full_size or fed_alg == "scaffold"  # + its float32 Δc
            assert math.isfinite(metrics["train_loss"])
    assert all(torch.isfinite(t).all() for t in adapter.values())


def test_dpo_with_top_k_resumes_byte_identically(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_pairs(tmp_path / "data")
    flags = ["--upload_codec", "topk", "--topk_fraction", "0.1", "--save_model_freq", "1"]
    full = main_dpo.main(dpo_argv(tmp_path, tiny_model_dir, data, *flags, "--run_name", "full"))
    resumed = tmp_path / "out" / "resumed"
    resumed.mkdir(parents=True)
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    main_dpo.main(dpo_argv(tmp_path, tiny_model_dir, data, *flags, "--run_name", "resumed",
                           "--resume_from_checkpoint", str(resumed / "checkpoint-1")))
    for name in FILES:
        assert (full / "checkpoint-2" / name).read_bytes() == (resumed / "checkpoint-2" / name).read_bytes(), name


def test_top_k_of_everything_is_fedavg(tmp_path: Path, tiny_model_dir: Path) -> None:
    """--topk_fraction 1.0 sends every value of y - x (and keeps a zero residual): FedAvg's adapter to float
    rounding, through the whole pipeline (a sparser top-k differs only by what it leaves out)."""
    plain = _run(tmp_path, tiny_model_dir, "none", "--num_rounds", "3")
    topk = _run(tmp_path, tiny_model_dir, "topk", "--num_rounds", "3", "--upload_codec", "topk", "--topk_fraction", "1")
    want = load_file(plain / "checkpoint-3" / "adapter_model.safetensors")
    got = load_file(topk / "checkpoint-3" / "adapter_model.safetensors")
    for key, tensor in want.items():
        torch.testing.assert_close(got[key], tensor, rtol=0, atol=1e-6)
