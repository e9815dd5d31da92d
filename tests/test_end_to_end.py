"""Federated SFT through main_sft.main on the tiny model: outputs, resume, baselines."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import main_sft


def write_jsonl(path: Path, n: int = 40) -> Path:
    """Invented instruction/response rows with a label column."""
    labels = ["positive", "negative"]
    with open(path, "w") as f:
        for i in range(n):
            row = {"instruction": f"What is {i} plus {i}?", "response": f"{2 * i}", "label": labels[i % 2]}
            f.write(json.dumps(row) + "\n")
    return path


def run(tmp_path: Path, model_dir: Path, *extra: str) -> Path:
    data = tmp_path / "train.jsonl"
    if not data.exists():
        write_jsonl(data)
    argv = [
        "--model_name_or_path", str(model_dir), "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"),
        "--num_clients", "3", "--sample_clients", "2", "--num_rounds", "2", "--max_steps", "2", "--batch_size", "2",
        "--seq_length", "64", "--torch_threads", "1", "--eval_samples", "4", *extra,
    ]
    return main_sft.main(argv)


def test_two_rounds_write_every_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    run_dir = run(tmp_path, tiny_model_dir, "--run_name", "r")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_clients"] == 3 and config["fed_alg"] == "fedavg"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        assert len(record["clients"]) == 2
        for metrics in record["client_metrics"].values():
            assert metrics["steps"] == 2 and metrics["bytes_uploaded"] > 0 and np.isfinite(metrics["train_loss"])
    loss = np.load(run_dir / "training_loss.npy")
    assert loss.shape == (3, 2)
    assert ((loss == -1).sum(axis=0) == 1).all()  # one client of three left out each round

    adapter = load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors")
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero: training moved it
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, run_dir / "checkpoint-2")
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


def test_resume_is_byte_identical(tmp_path: Path, tiny_model_dir: Path) -> None:
    full = run(tmp_path, tiny_model_dir, "--run_name", "full", "--num_rounds", "4", "--save_model_freq", "2")
    resumed_dir = tmp_path / "out" / "resumed"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(full / "checkpoint-2", resumed_dir / "checkpoint-2")
    run(tmp_path, tiny_model_dir, "--num_rounds", "4", "--save_model_freq", "2",
        "--resume_from_checkpoint", str(resumed_dir / "checkpoint-2"))
    for name in ("adapter_model.safetensors", "federated_state.safetensors"):
        assert (full / "checkpoint-4" / name).read_bytes() == (resumed_dir / "checkpoint-4" / name).read_bytes()
    rounds = [json.loads(line)["round"] for line in (resumed_dir / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [3, 4]


@pytest.mark.parametrize(("name", "corrupt", "message"), [
    ("adapter_model.safetensors", lambda b: b[: len(b) // 2], "adapter_model.safetensors is unreadable"),
    ("federated_state.json", lambda b: b[:-5], "federated_state.json is unreadable"),
    ("federated_state.safetensors", lambda b: b"{}" + b[2:], "federated_state.safetensors is unreadable"),
])
def test_corrupt_checkpoint_names_the_file_and_the_previous_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, name: str, corrupt: object, message: str
) -> None:
    full = run(tmp_path, tiny_model_dir, "--run_name", "c", "--num_rounds", "2", "--save_model_freq", "1")
    target = full / "checkpoint-2" / name
    target.write_bytes(corrupt(target.read_bytes()))  # type: ignore[operator]
    with pytest.raises(ValueError, match=f"{message}.*--resume_from_checkpoint {full / 'checkpoint-1'}"):
        run(tmp_path, tiny_model_dir, "--num_rounds", "3", "--resume_from_checkpoint", str(full / "checkpoint-2"))
    first = full / "checkpoint-1" / name
    first.write_bytes(corrupt(first.read_bytes()))  # type: ignore[operator]
    with pytest.raises(ValueError, match="no earlier checkpoint: start it again"):
        run(tmp_path, tiny_model_dir, "--num_rounds", "3", "--resume_from_checkpoint", str(full / "checkpoint-1"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--peft_lora_r", "4"], "its adapter does not fit this run's"),
    (["--num_clients", "4"], "no training-loss table for --num_clients 4; resume with the run's own --num_clients"),
])
def test_resume_with_other_shapes_says_which_flag(
    tmp_path: Path, tiny_model_dir: Path, extra: list[str], message: str
) -> None:
    full = run(tmp_path, tiny_model_dir, "--run_name", "s", "--num_rounds", "1")
    with pytest.raises(ValueError, match=re.escape(message)):
        run(tmp_path, tiny_model_dir, "--num_rounds", "2", "--resume_from_checkpoint", str(full / "checkpoint-1"),
            *extra)


def test_an_empty_data_file_is_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "empty.jsonl").touch()
    with pytest.raises(ValueError, match=f"^{tmp_path / 'empty.jsonl'}: the file is empty; fill it or remove it$"):
        run(tmp_path, tiny_model_dir, "--dataset_name", str(tmp_path / "empty.jsonl"))


def test_eval_samples_zero_trains_without_evaluating(tmp_path: Path, tiny_model_dir: Path) -> None:
    run_dir = run(tmp_path, tiny_model_dir, "--run_name", "no-eval", "--eval_samples", "0", "--eval_every", "1")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2]  # no round-0 evaluation either
    assert not any(key.startswith("eval_") for r in records for key in r)


def test_local_baseline_trains_one_client(tmp_path: Path, tiny_model_dir: Path) -> None:
    run_dir = run(tmp_path, tiny_model_dir, "--run_name", "local", "--fed_alg", "local1")
    loss = np.load(run_dir / "training_loss.npy")
    assert (loss[1] > 0).all() and (loss[[0, 2]] == -1).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sample_clients", "5"], "--sample_clients"),
        (["--fed_alg", "local3"], "local0 .. local2"),
        (["--fed_alg", "fedsomething"], "Valid:"),
        (["--load_in_8bit", "--load_in_4bit"], "exclusive"),
        (["--dataset_name", "no/such-dataset"], "no/such-dataset"),
        (["--dataset_name", "missing.jsonl"], "missing.jsonl"),
        (["--template", "nope"], "--template"),
        (["--resume_from_checkpoint", "/no/such/checkpoint"], "--resume_from_checkpoint"),
        (["--eval_samples", "-1"], "--eval_samples must be 0 or more"),
        (["--eval_every", "-2"], "--eval_every must be 0 or more"),
        (["--eval_batch_size", "0"], "--eval_batch_size must be at least 1"),
        (["--client_weighting", "by_size"], "--client_weighting 'by_size' is unknown"),
        (["--max_update_norm", "-1"], "--max_update_norm must be 0"),
        (["--prox_mu", "-0.1"], "--prox_mu must be >= 0"),
        (["--fedopt_variant", "flower"], "--fedopt_variant 'flower' is unknown"),
        (["--peft_target_modules", "q_proj,v_proj,lm_head"], "names lm_head: TRL"),
        (["--ref_adapter", "sft_adapter"], "--ref_adapter is a DPO flag (main_dpo.py)"),
    ],
)
def test_bad_input_fails_before_model_loads(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr("federated_learning.build.load_model_and_tokenizer", no_model)
    with pytest.raises(ValueError, match=re.escape(message)):
        run(tmp_path, tiny_model_dir, *extra)


def test_unwritable_output_dir(tmp_path: Path, tiny_model_dir: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises((ValueError, OSError), match="output_dir|file"):
        run(tmp_path, tiny_model_dir, "--output_dir", str(blocker / "sub"))


def test_base_weights_frozen(tmp_path: Path, tiny_model_dir: Path) -> None:
    from federated_learning.build import load_peft_model
    from federated_learning.cli import parse_run
    from federated_learning.client import LocalTrainer
    from federated_learning.state import get_state, trainable_parameters
    from federated_learning.tasks import get_task
    from utils.sft_data import load_sft_dataset
    from utils.sft_tokenize import tokenize_sft

    cfg = parse_run("sft", ["--model_name_or_path", str(tiny_model_dir), "--max_steps", "3", "--batch_size", "2"])
    model, tokenizer = load_peft_model(cfg.script)
    rows = tokenize_sft(load_sft_dataset(str(write_jsonl(tmp_path / "d.jsonl"))), tokenizer, "alpaca", 64)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = trainable_parameters(model)
    adapter_before = get_state(trainable)
    trainer = LocalTrainer(get_task("sft").build_trainer(model, tokenizer, rows, cfg, tmp_path / "t", False), False)
    metrics = trainer.train(0, rows, 1e-2, seed=1)
    assert metrics["steps"] == 3
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if not p.requires_grad)
    after = get_state(trainable)
    assert any(not torch.equal(after[k], adapter_before[k]) for k in after)
    assert trainer.trainer.optimizer is not None
    first_optimizer = trainer.trainer.optimizer
    trainer.train(1, rows, 1e-2, seed=2)
    assert trainer.trainer.optimizer is not first_optimizer  # a fresh optimizer every round
