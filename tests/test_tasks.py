"""Training tasks are plugins: the registry, the task interface, and a task defined here run end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from config import RunConfig
from federated_learning.cli import parse_run, run_task
from federated_learning.tasks import RoundBenchmark, Task, available_tasks, get_task
from federated_learning.tasks import base as task_registry


@dataclass
class TextArguments:
    """The extra task's own flag."""

    text_column: str = field(default="text", metadata={"help": "column holding the text to model"})


class PlainTextTask(Task):
    """Plain language modelling of a text column, loss on every token: a third task, defined only here."""

    name = "plain_text"
    config_class = TextArguments
    defaults = {"num_rounds": 2, "max_steps": 2, "batch_size": 2, "seq_length": 32}

    def check_data(self, cfg: RunConfig, data_path: str | None = None) -> None:
        path = Path(data_path or cfg.script.dataset_name)
        if path.suffix != ".jsonl" or not path.is_file():
            raise ValueError(f"--dataset_name {path}: pass a .jsonl file with a {cfg.task_args.text_column!r} column")

    def load(self, cfg: RunConfig, data_path: str | None = None) -> Any:
        import datasets

        rows = datasets.load_dataset("json", data_files=data_path or cfg.script.dataset_name, split="train")
        return rows.select_columns([cfg.task_args.text_column])

    def tokenize(self, rows: Any, tokenizer: Any, cfg: RunConfig) -> Any:
        def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
            ids = [i[: cfg.script.seq_length] for i in tokenizer(batch[cfg.task_args.text_column])["input_ids"]]
            return {"input_ids": ids, "labels": [list(i) for i in ids]}

        return rows.map(encode, batched=True, remove_columns=rows.column_names)

    def build_trainer(self, model: Any, tokenizer: Any, tokenized: Any, cfg: RunConfig, output_dir: Path,
                      bf16: bool) -> Any:
        from trl import SFTConfig, SFTTrainer
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        from federated_learning.trainers import common_training_kwargs

        args = SFTConfig(**common_training_kwargs(cfg.script, output_dir, bf16), max_length=cfg.script.seq_length,
                         dataset_kwargs={"skip_prepare_dataset": True}, packing=False)
        return SFTTrainer(model=model, args=args, train_dataset=tokenized, processing_class=tokenizer,
                          data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id))

    def round_benchmarks(self, cfg: RunConfig) -> list[RoundBenchmark]:
        return []


@pytest.fixture()
def plain_text_task() -> Iterator[type[Task]]:
    """The extra task, registered for one test only."""
    task_registry.register(PlainTextTask)
    yield PlainTextTask
    del task_registry._REGISTRY[PlainTextTask.name]


def test_registry_lists_the_shipped_tasks_and_refuses_unknown_ones() -> None:
    assert {"sft", "dpo"} <= set(available_tasks())
    assert get_task("dpo").defaults["dataset_name"] == "bundled/preferences"
    with pytest.raises(ValueError, match="registered tasks: dpo, sft"):
        get_task("ppo")
    with pytest.raises(ValueError, match="registered twice"):
        task_registry.register(type(get_task("sft")))


def test_an_extra_task_runs_through_the_simulation(plain_text_task: type[Task], tmp_path: Path,
                                                   tiny_model_dir: Path) -> None:
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"body": f"line {i} of a plain text corpus"}) + "\n" for i in range(12)))
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data), "--text_column", "body",
            "--num_clients", "3", "--output_dir", str(tmp_path / "out"), "--run_name", "r", "--torch_threads", "1",
            "--learning_rate", "1e-2"]
    cfg = parse_run("plain_text", argv)
    assert cfg.task_args.text_column == "body" and cfg.fed.num_rounds == 2  # its flag and its defaults
    run_dir = run_task("plain_text", argv)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2]  # no round benchmarks: no evaluation records
    assert all(m["steps"] == 2 and m["train_loss"] > 0 for r in records for m in r["client_metrics"].values())
    assert json.loads((run_dir / "config.json").read_text())["text_column"] == "body"
    adapter = load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # it trained
    with pytest.raises(ValueError, match="pass a .jsonl file"):
        run_task("plain_text", [*argv[:3], str(tmp_path / "missing.txt"), *argv[4:]])
    torch.manual_seed(0)  # the run seeds torch per client-round; leave the global RNG as other tests expect
