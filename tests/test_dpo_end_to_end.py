"""Federated DPO on the tiny model: every algorithm, a fixed reference policy, resume, flags, configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, TrainerCallback

import main_dpo
from config import RunConfig, ScriptArguments
from evaluation.benchmarks.dpo_preference import preference_metrics
from evaluation.logprobs import completion_logprobs
from evaluation.registry import EvalSettings, get_benchmark
from federated_learning import available_aggregators
from federated_learning.build import build_round_loop, load_peft_model, split_clients
from federated_learning.cli import parse_run
from federated_learning.client import LocalTrainer
from federated_learning.partition import client_rows
from federated_learning.state import get_state, trainable_parameters
from federated_learning.tasks import get_task
from tests.test_robust import ROBUST
from utils.constants import REF_ADAPTER
from utils.dpo_data import load_dpo_dataset
from utils.dpo_tokenize import render_preference_row, tokenize_dpo
from utils.model import reference_policy
from utils.templates import get_template

ROOT = Path(__file__).resolve().parents[1]
FIXED_PAIR = {"prompt": "what is 4 + 4", "chosen": "8", "rejected": "9"}


def write_pairs(folder: Path, n: int = 24, identical: bool = False) -> Path:
    """Invented preference pairs: train.jsonl and test.jsonl in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, offset in (("train", 0), ("test", 100)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                a = i + offset
                row = FIXED_PAIR if identical else {"prompt": f"what is {a} + 1", "chosen": f"{a + 1}",
                                                    "rejected": f"{a + 2}", "category": ["+", "-"][i % 2]}
                f.write(json.dumps(row) + "\n")
    return folder


def argv(tmp_path: Path, model_dir: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"),
        "--num_clients", "3", "--sample_clients", "2", "--num_rounds", "2", "--max_steps", "2", "--batch_size", "2",
        "--seq_length", "128", "--torch_threads", "1", "--eval_samples", "6", "--learning_rate", "1e-2",
        "--dpo_beta", "0.5", "--bf16", "false", *extra,
    ]


# ------------------------------------------------------------------------------ every algorithm
# The LoRA-aware ones send part of the adapter or merge into the base: tests/test_lora_end_to_end.py.
LORA_AWARE = ("ffa_lora", "fedsa_lora", "flora", "flexlora", "fedex_lora", "rolora", "hetlora")


@pytest.mark.slow
@pytest.mark.parametrize("fed_alg", [a for a in available_aggregators() if a not in LORA_AWARE])
def test_every_algorithm_runs_two_dpo_rounds(tmp_path: Path, tiny_model_dir: Path, fed_alg: str) -> None:
    data = write_pairs(tmp_path / "data")
    robust = ["--sample_clients", "3", "--trim_fraction", "0.34"] if fed_alg in ROBUST else []  # as with SFT
    run_dir = main_dpo.main(argv(tmp_path, tiny_model_dir, data, "--fed_alg", fed_alg, "--run_name", fed_alg, *robust))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert records[0]["eval_preference_accuracy"] == 0.5 and records[0]["eval_reward_margin"] == 0.0
    assert records[-1]["eval_pairs"] == 6 and records[-1]["eval_reward_margin"] != 0.0
    final = load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors")
    adapter_bytes = sum(t.numel() * t.element_size() for t in final.values())
    for record in records[1:]:
        for metrics in record["client_metrics"].values():
            assert metrics["steps"] == 2 and 0 < metrics["train_loss"] < 10
            # SCAFFOLD's client hook ran inside DPOTrainer: it sends its control-variate delta too.
            assert metrics["bytes_uploaded"] == adapter_bytes * (2 if fed_alg == "scaffold" else 1)

    initial, _ = load_peft_model(parse_run("dpo", argv(tmp_path, tiny_model_dir, data)).script)  # same seeded LoRA
    start = get_state(trainable_parameters(initial))
    assert final.keys() == start.keys()
    assert any(not torch.equal(final[k], start[k]) for k in start if "lora_B" in k)
    assert any(not torch.equal(final[k], start[k]) for k in start if "lora_A" in k)
    assert not (run_dir / "checkpoint-2" / REF_ADAPTER).exists()  # default mode: no reference adapter


# ------------------------------------------------------------------------------ reference policy
class RecordReference(TrainerCallback):
    """At the start of every client-round: the reference and policy log-probs of a fixed batch; TRL's logs."""

    def __init__(self, model: PeftModel, tokenizer: Any, rows: list[dict[str, Any]]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        rendered = [render_preference_row(row, get_template("alpaca"), tokenizer) for row in rows]
        self.prompts = [r[0] for r in rendered] * 2
        self.completions = [r[1] for r in rendered] + [r[2] for r in rendered]
        self.reference: list[list[float]] = []
        self.policy: list[list[float]] = []
        self.trl_logs: list[dict[str, float]] = []

    def _logprobs(self) -> list[float]:
        scores = completion_logprobs(self.model, self.tokenizer, self.prompts, self.completions, seq_length=128)
        return [s.logprob for s in scores]

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        with reference_policy(self.model):
            self.reference.append(self._logprobs())
        self.policy.append(self._logprobs())

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "rewards/chosen" in logs:
            self.trl_logs.append(dict(logs))


def build_dpo(cfg: RunConfig, model: PeftModel, tokenizer: Any, tokenized: Any, tmp_path: Path) -> Any:
    """The DPO task's trainer, then its reference, as every run builds them."""
    task = get_task("dpo")
    trainer = task.build_trainer(model, tokenizer, tokenized, cfg, tmp_path / "trainer", False)
    task.prepare_model(model, cfg)
    return trainer


def train_in_process(tmp_path: Path, model_dir: Path, *extra: str) -> tuple[PeftModel, Any, RecordReference, Any]:
    """Three rounds, one client per round, one step per client-round on copies of the fixed pair."""
    data = write_pairs(tmp_path / "data", n=8, identical=True)
    cfg = parse_run("dpo", argv(
        tmp_path, model_dir, data, "--num_clients", "2", "--sample_clients", "1", "--num_rounds", "3",
        "--max_steps", "1", "--learning_rate", "5e-2", *extra))
    model, tokenizer = load_peft_model(cfg.script, cfg.script.ref_adapter)
    pairs = load_dpo_dataset(str(data), None, 0)
    tokenized = tokenize_dpo(pairs, tokenizer, cfg.script.template, cfg.script.seq_length)
    shards = client_rows(tokenized, split_clients(pairs, cfg), len(pairs))
    trainer = build_dpo(cfg, model, tokenizer, shards[0].to_dataset(), tmp_path)
    recorder = RecordReference(model, tokenizer, [{**FIXED_PAIR, "prompt": [FIXED_PAIR["prompt"]]}])
    trainer.add_callback(recorder)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    build_round_loop(cfg, model, LocalTrainer(trainer, show_progress=False), shards, run_dir, None).run()
    return model, trainer, recorder, cfg.script


def trl_reference_logp(log: dict[str, float], beta: float) -> float:
    """The reference log-prob of the chosen answer that DPOTrainer used: logps - rewards / beta."""
    return log["logps/chosen"] - log["rewards/chosen"] / beta


def assert_reference_fixed(recorder: RecordReference, beta: float) -> None:
    assert len(recorder.reference) == 3 and len(recorder.trl_logs) == 3
    assert recorder.reference[0] == recorder.reference[2]  # bit for bit, round 1 vs round 3
    # The policy did move, so a reference that followed the global adapter would have moved too.
    assert abs(recorder.policy[2][0] - recorder.policy[0][0]) > 0.05
    ref_1, ref_3 = (trl_reference_logp(recorder.trl_logs[r], beta) for r in (0, 2))
    assert ref_1 == pytest.approx(ref_3, abs=1e-3)  # what DPOTrainer itself used as reference
    assert ref_1 == pytest.approx(recorder.reference[0][0], abs=1e-3)
    assert abs(recorder.trl_logs[2]["logps/chosen"] - ref_3) > 0.05


def test_default_reference_is_the_base_model_and_never_drifts(tmp_path: Path, tiny_model_dir: Path) -> None:
    model, trainer, recorder, script_args = train_in_process(tmp_path, tiny_model_dir)
    assert_reference_fixed(recorder, script_args.dpo_beta)
    assert trainer.ref_model is None and REF_ADAPTER not in model.peft_config
    # One base model in memory: its parameters plus one adapter, nothing more.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = sum(p.numel() for p in trainable_parameters(model).values())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in base.parameters()) + adapter
    # The reference is the base model exactly.
    scores = completion_logprobs(base, recorder.tokenizer, recorder.prompts, recorder.completions, seq_length=128)
    assert [s.logprob for s in scores] == pytest.approx(recorder.reference[0], abs=1e-5)
    assert trainer.args.max_length == script_args.seq_length == trainer.data_collator.max_length


def save_random_adapter(model_dir: Path, folder: Path) -> dict[str, torch.Tensor]:
    """A LoRA adapter with non-zero B (unlike a fresh one), saved as PEFT saves it."""
    torch.manual_seed(7)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                          LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    peft.save_pretrained(folder)
    return load_file(folder / "adapter_model.safetensors")


def ref_weights(model: PeftModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if f".{REF_ADAPTER}." in n}


def test_ref_adapter_is_reference_and_start_and_never_drifts(tmp_path: Path, tiny_model_dir: Path) -> None:
    saved = save_random_adapter(tiny_model_dir, tmp_path / "sft_adapter")
    model, trainer, recorder, script_args = train_in_process(tmp_path, tiny_model_dir,
                                                             "--ref_adapter", str(tmp_path / "sft_adapter"))
    assert_reference_fixed(recorder, script_args.dpo_beta)
    # The policy started from the adapter: before round 1 policy and reference agreed exactly.
    assert recorder.policy[0] == recorder.reference[0]
    # The reference is the saved adapter, not the base model, and its weights never changed.
    refs = ref_weights(model)
    assert len(refs) == len(saved)
    for key, value in saved.items():
        live = next(v for n, v in refs.items() if n.replace(f".{REF_ADAPTER}.", ".") == key)
        assert torch.equal(live, value)
    with model.disable_adapter():
        base = completion_logprobs(model, recorder.tokenizer, recorder.prompts, recorder.completions, seq_length=128)
    assert abs(base[0].logprob - recorder.reference[0][0]) > 1e-3


def test_ref_adapter_reloaded_whatever_the_model_holds(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Building the trainer after the adapter moved (e.g. on resume) still gives the saved reference."""
    saved = save_random_adapter(tiny_model_dir, tmp_path / "sft_adapter")
    data = write_pairs(tmp_path / "data", n=4)
    cfg = parse_run("dpo", argv(tmp_path, tiny_model_dir, data, "--ref_adapter", str(tmp_path / "sft_adapter")))
    model, tokenizer = load_peft_model(cfg.script, cfg.script.ref_adapter)
    assert all(torch.equal(v, saved[k]) for k, v in get_state(trainable_parameters(model)).items())
    with torch.no_grad():
        for param in trainable_parameters(model).values():
            param.zero_()
    tokenized = tokenize_dpo(load_dpo_dataset(str(data), None, 0), tokenizer, "alpaca", 128)
    build_dpo(cfg, model, tokenizer, tokenized, tmp_path)
    refs = {n.replace(f".{REF_ADAPTER}.", "."): v for n, v in ref_weights(model).items()}
    assert refs.keys() == saved.keys() and all(torch.equal(refs[k], saved[k]) for k in saved)


def test_ref_adapter_of_another_shape_names_the_flags(tmp_path: Path, tiny_model_dir: Path) -> None:
    saved = save_random_adapter(tiny_model_dir, tmp_path / "sft_adapter")
    # as if trained on a model with a wider hidden size: every lora_A has 4 more input columns
    wider = {k: torch.cat([v, v[:, :4]], dim=1) if "lora_A" in k else v for k, v in saved.items()}
    save_file(wider, tmp_path / "sft_adapter" / "adapter_model.safetensors")
    cfg = parse_run("dpo", argv(tmp_path, tiny_model_dir, write_pairs(tmp_path / "data", n=4),
                                "--ref_adapter", str(tmp_path / "sft_adapter")))
    with pytest.raises(ValueError, match=f"^the adapter {tmp_path / 'sft_adapter'} does not fit --model_name_or_path "
                                         r".*size mismatch.*; pass an adapter trained on this model$"):
        load_peft_model(cfg.script, cfg.script.ref_adapter)


def test_micro_batches_give_the_full_batch_step(tmp_path: Path, tiny_model_dir: Path) -> None:
    """batch_size pairs run as two micro-batches of half the pairs: same pairs per step, same update."""
    data = write_pairs(tmp_path / "data", n=4)
    updates = []
    for split in (True, False):
        cfg = parse_run("dpo", argv(tmp_path, tiny_model_dir, data, "--batch_size", "4", "--max_steps", "1",
                                    "--optim", "sgd"))
        model, tokenizer = load_peft_model(cfg.script)
        tokenized = tokenize_dpo(load_dpo_dataset(str(data), None, 0), tokenizer, "alpaca", 128)
        trainer = build_dpo(cfg, model, tokenizer, tokenized, tmp_path)
        assert trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps == 4
        if split:
            assert trainer.args.per_device_train_batch_size == 2
        else:  # the unsplit step: one batch of 4 pairs (Trainer keeps its batch size from __init__)
            trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps = 4, 1
            trainer._train_batch_size = 4
        before = get_state(trainable_parameters(model))
        LocalTrainer(trainer, show_progress=False).train(0, tokenized, 0.5, seed=0)
        after = get_state(trainable_parameters(model))
        updates.append({k: after[k] - before[k] for k in before})
    assert any(u.abs().sum() > 0 for u in updates[0].values())
    for key, value in updates[0].items():
        torch.testing.assert_close(value, updates[1][key], rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------ evaluation
def test_preference_metrics_by_hand() -> None:
    policy_c, policy_r = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-2.0, -1.0, -3.0])
    ref_c, ref_r = torch.tensor([-1.5, -2.0, -3.0]), torch.tensor([-1.5, -2.0, -3.0])
    metrics = preference_metrics(policy_c, policy_r, ref_c, ref_r, beta=0.5)
    # margins: 0.5 * ((0.5) - (-0.5)) = 0.5; 0.5 * (0 - 1) = -0.5; 0
    assert metrics["preference_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert metrics["reward_margin"] == pytest.approx(0.0)
    expected_loss = (torch.nn.functional.softplus(torch.tensor([-0.5, 0.5, 0.0], dtype=torch.float64))).mean()
    assert metrics["dpo_loss"] == pytest.approx(float(expected_loss))
    assert metrics["likelihood_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert metrics["pairs"] == 3


@pytest.mark.parametrize("cache_reference", [False, True])
def test_preference_benchmark_before_training_and_after_a_change(
    tmp_path: Path, tiny_model_dir: Path, cache_reference: bool
) -> None:
    model, tokenizer = load_peft_model(ScriptArguments(model_name_or_path=str(tiny_model_dir)))
    rows = [{"prompt": [f"what is {i} + 1"], "chosen": f"{i + 1}", "rejected": f"{i + 3}", "category": "ab"[i % 2]}
            for i in range(5)]
    bench = get_benchmark("dpo_preference")
    examples = bench.normalize(rows)
    settings = EvalSettings(batch_size=2, seq_length=128, dpo_beta=0.1, cache_reference=cache_reference)
    before = bench.evaluate(model, tokenizer, examples, settings).metrics
    assert before["preference_accuracy"] == 0.5 and before["reward_margin"] == 0.0
    assert before["pairs"] == 5
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    after = bench.evaluate(model, tokenizer, examples, settings).metrics
    assert after["reward_margin"] != 0.0
    # The implicit reward is beta * (policy - reference) log-probs, recomputed here from scratch.
    rendered = [render_preference_row(row, get_template("alpaca"), tokenizer) for row in rows]
    prompts = [r[0] for r in rendered] * 2
    completions = [r[1] for r in rendered] + [r[2] for r in rendered]
    policy = [s.logprob for s in completion_logprobs(model, tokenizer, prompts, completions, seq_length=128)]
    with model.disable_adapter():
        ref = [s.logprob for s in completion_logprobs(model, tokenizer, prompts, completions, seq_length=128)]
    margins = [0.1 * ((policy[i] - ref[i]) - (policy[5 + i] - ref[5 + i])) for i in range(5)]
    assert after["reward_margin"] == pytest.approx(sum(margins) / 5, abs=1e-5)
    for category, members in (("a", [0, 2, 4]), ("b", [1, 3])):
        wins = sum(1.0 if margins[i] > 0 else 0.5 if margins[i] == 0 else 0.0 for i in members)
        assert after[f"preference_accuracy/{category}"] == pytest.approx(wins / len(members))
    assert before["preference_accuracy/a"] == before["preference_accuracy/b"] == 0.5


# ------------------------------------------------------------------------------ resume, flags, configs
@pytest.mark.slow
def test_resume_is_exact(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_pairs(tmp_path / "data")
    full = main_dpo.main(argv(tmp_path, tiny_model_dir, data, "--run_name", "full", "--save_model_freq", "1"))
    resumed = tmp_path / "out" / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    main_dpo.main(argv(tmp_path, tiny_model_dir, data, "--save_model_freq", "1",
                       "--resume_from_checkpoint", str(resumed / "checkpoint-1")))
    for name in ("adapter_model.safetensors", "federated_state.safetensors"):
        assert (full / "checkpoint-2" / name).read_bytes() == (resumed / "checkpoint-2" / name).read_bytes()


@pytest.mark.parametrize(("extra", "message"), [
    (["--dataset_name", "bundled/fin_sentiment"], "not a preference dataset"),
    (["--dpo_beta", "0"], "--dpo_beta must be positive"),
    (["--ref_adapter", "{tmp}"], "adapter_config.json"),
    (["--dataset_name", "bundled/preferences", "--dataset_split", "train_prefs"], "--dataset_split 'train_prefs'"),
])
def test_bad_flags_fail_before_the_model_loads(tmp_path: Path, extra: list[str], message: str) -> None:
    data = write_pairs(tmp_path / "data", n=3)
    flags = [e.format(tmp=tmp_path) for e in extra]
    with pytest.raises(ValueError, match=message):
        main_dpo.main(argv(tmp_path, tmp_path / "no-model-needed", data, *flags))


def test_defaults_yaml_and_cli_overrides(tmp_path: Path) -> None:
    cfg = parse_run("dpo", [])
    script_args, fed_args = cfg.script, cfg.fed
    assert script_args.dataset_name == "bundled/preferences" and cfg.task_args.dataset_split is None
    for key, value in get_task("dpo").defaults.items():
        assert getattr(script_args, key, getattr(fed_args, key, None)) == value
    config = ROOT / "training_scripts" / "configs" / "dpo_default.yaml"
    keys = yaml.safe_load(config.read_text())
    cfg = parse_run("dpo", ["--config", str(config), "--num_rounds", "3"])
    script_args, fed_args = cfg.script, cfg.fed
    assert fed_args.num_rounds == 3
    for key, value in keys.items():
        if key != "num_rounds":
            assert getattr(script_args, key, getattr(fed_args, key, None)) == value


def test_run_dpo_script_flags_parse(tmp_path: Path) -> None:
    """training_scripts/run_dpo.sh, run with a stand-in python that records its arguments."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / "training_scripts" / "run_dpo.sh")], check=True, env=env, cwd=tmp_path)
    args = (tmp_path / "args").read_text().splitlines()
    assert args[0].endswith("main_dpo.py")
    cfg = parse_run("dpo", args[1:])
    script_args, fed_args = cfg.script, cfg.fed
    assert script_args.dataset_name == "Anthropic/hh-rlhf" and script_args.template == "vicuna_v1.1"
    assert script_args.seq_length == 512 and fed_args.num_rounds == 200 and script_args.load_in_8bit
