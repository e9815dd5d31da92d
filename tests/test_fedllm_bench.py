"""FedLLM-Bench's naturally split datasets, read from fixture files in the release's layout.

The layout is the one FedLLM-Bench's own code reads (rui-ye/FedLLM-Bench: ``utils/benchmark_dataset.py``
``get_fed_datasets`` json-loads the file and makes one client per value of its top-level object; the
paths are those of ``training_scripts/*/*.sh``'s ``local_data_dir``; rows: ``instruction`` /
``response`` (``utils/template.py``), ``conversations`` of ``{"from": "human"|"gpt", "value"}`` turns
(``data_module.py``), ``prompt`` / ``chosen`` / ``rejected`` for Fed-ChatbotPA (passed as is to TRL's
DPOTrainer)). The texts here are invented.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import main_dpo
import main_sft
from evaluation.benchmarks.heldout import HeldOutLoss
from evaluation.client_sets import client_eval_indices, client_mixes
from evaluation.registry import EvalSettings
from federated_learning.partition import partition_indices
from utils.dpo_data import load_dpo_dataset
from utils.fedllm_bench import FEDLLM_BENCH, load_bench
from utils.sft_data import load_sft_dataset
from utils.sft_tokenize import tokenize_sft
from utils.tiny_model import build_tiny_tokenizer


def _write(root: Path, name: str, clients: dict[str, list[dict]]) -> Path:
    path = root / FEDLLM_BENCH[name].file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clients), encoding="utf-8")
    return root


def _single_turn(clients: int = 3, rows: int = 20) -> dict[str, list[dict]]:
    return {f"client-{c}": [{"instruction": f"Question {c}.{i}: what is {i} + {c}?", "response": f"{i + c}"}
                            for i in range(rows)] for c in range(clients)}


def _pairs(clients: int = 2, rows: int = 16) -> dict[str, list[dict]]:
    return {f"user{c}": [{"prompt": f"Say {i} twice for user {c}.", "chosen": f"{i} {i}", "rejected": f"{i}"}
                         for i in range(rows)] for c in range(clients)}


def test_each_client_holds_out_its_own_rows_and_train_and_test_never_share_one(tmp_path: Path) -> None:
    root = _write(tmp_path, "FedLLM-Bench/Fed-Aya", {**_single_turn(), "tiny": [{"instruction": "a", "response": "b"},
                                                                              {"instruction": "c", "response": "d"}]})
    train = load_sft_dataset("FedLLM-Bench/Fed-Aya", str(root), 0, "train")
    test = load_sft_dataset("FedLLM-Bench/Fed-Aya", str(root), 0, "test")
    assert train.column_names == test.column_names == ["instruction", "response", "user"]
    pairs = {(r["user"], r["instruction"]) for r in train}
    held = {(r["user"], r["instruction"]) for r in test}
    assert not pairs & held and len(pairs | held) == 3 * 20 + 2
    assert set(Counter(r["user"] for r in test)) == {"client-0", "client-1", "client-2", "tiny"}  # every client
    assert Counter(r["user"] for r in train)["tiny"] == 1  # a client of two keeps one row to train on
    assert len(test) < 0.25 * (len(train) + len(test))
    again = load_bench("FedLLM-Bench/Fed-Aya", str(root), "test")
    assert sorted(again["instruction"]) == sorted(test["instruction"])  # the same held-out rows every time


def test_multi_turn_conversations_become_one_row_per_answer_with_their_history(tmp_path: Path) -> None:
    conversation = [{"from": "gpt", "value": "Welcome."}, {"from": "human", "value": "H1"},
                    {"from": "gpt", "value": "A1"}, {"from": "human", "value": "H2"}, {"from": "gpt", "value": "A2"}]
    root = _write(tmp_path, "FedLLM-Bench/Fed-WildChat-MT", {"u": [{"conversations": conversation}] * 1})
    rows = load_bench("FedLLM-Bench/Fed-WildChat-MT", str(root), "train").to_list()
    assert rows == [{"instruction": "H1", "response": "A1", "history": [], "user": "u"},
                    {"instruction": "H2", "response": "A2", "history": ["H1", "A1"], "user": "u"}]
    tokenizer = build_tiny_tokenizer()
    dataset = load_sft_dataset("FedLLM-Bench/Fed-WildChat-MT", str(root), 0, "train")
    ids = tokenize_sft(dataset, tokenizer, "alpaca", 512)
    second = next(i for i, r in enumerate(dataset) if r["history"])
    text = tokenizer.decode(ids[second]["input_ids"])
    assert text.index("H1") < text.index("A1") < text.index("H2") < text.index("A2")  # the earlier turns come first
    labels = [t for t, label in zip(ids[second]["input_ids"], ids[second]["labels"], strict=True) if label != -100]
    assert "A1" not in tokenizer.decode(labels) and "A2" in tokenizer.decode(labels)  # loss on this answer only


@pytest.mark.parametrize(("clients", "message"), [
    ([{"instruction": "a", "response": "b"}], "expected a JSON object mapping each client"),
    ({"u": [{"instruction": "a"}, {"instruction": "b"}]}, "each row must have instruction, response"),
])
def test_a_file_in_another_layout_is_refused(tmp_path: Path, clients: object, message: str) -> None:
    path = tmp_path / FEDLLM_BENCH["FedLLM-Bench/Fed-ChatbotIT"].file
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(clients))
    with pytest.raises(ValueError, match=message):
        load_sft_dataset("FedLLM-Bench/Fed-ChatbotIT", str(tmp_path), 0, "train")


def test_missing_folder_or_file_and_wrong_task_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass --local_data_dir <folder> holding Fed-Aya/aya_38c_25k.json"):
        main_sft.main(["--dataset_name", "FedLLM-Bench/Fed-Aya", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"expects .*Fed-WildChat/single_turn/wildchat_100c_53k.json"):
        main_sft.main(["--dataset_name", "FedLLM-Bench/Fed-WildChat", "--local_data_dir", str(tmp_path),
                       "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="is a preference \\(DPO\\) dataset; use it with main_dpo.py"):
        main_sft.main(["--dataset_name", "FedLLM-Bench/Fed-ChatbotPA", "--local_data_dir", str(tmp_path),
                       "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="is an SFT dataset"):
        main_dpo.main(["--dataset_name", "FedLLM-Bench/Fed-Aya", "--local_data_dir", str(tmp_path),
                       "--output_dir", str(tmp_path)])


def test_natural_split_by_user_gives_each_client_exactly_its_own_held_out_rows(tmp_path: Path) -> None:
    root = _write(tmp_path, "FedLLM-Bench/Fed-ChatbotIT", _single_turn())
    name = "FedLLM-Bench/Fed-ChatbotIT"
    train = load_sft_dataset(name, str(root), 0, "train")
    partition = partition_indices(train, 3, "natural", partition_column="user")
    examples, users = HeldOutLoss().load_groups(EvalSettings(sft_dataset=name, local_data_dir=str(root)), "user")
    sets = client_eval_indices(users, client_mixes(train["user"], partition), 50, seed=0)
    for rows, indices in zip(partition, sets, strict=True):
        (user,) = set(train.select(rows)["user"])
        assert sorted(examples[i]["instruction"] for i in indices) == sorted(
            e["instruction"] for e, u in zip(examples, users, strict=True) if u == user)
        assert not {examples[i]["instruction"] for i in indices} & set(train["instruction"])


@pytest.mark.slow
def test_natural_split_trains_and_scores_one_client_per_user(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = _write(tmp_path / "data", "FedLLM-Bench/Fed-ChatbotIT", _single_turn())
    run = main_sft.main(["--model_name_or_path", str(tiny_model_dir), "--dataset_name", "FedLLM-Bench/Fed-ChatbotIT",
                         "--local_data_dir", str(root), "--split_strategy", "natural", "--partition_column", "user",
                         "--num_clients", "3", "--sample_clients", "2", "--num_rounds", "1", "--max_steps", "1",
                         "--batch_size", "2", "--seq_length", "64", "--torch_threads", "1", "--eval_samples", "4",
                         "--eval_per_client", "50", "--output_dir", str(tmp_path / "out")])
    sizes = json.loads((run / "partition.json").read_text())["sizes"]
    train = load_bench("FedLLM-Bench/Fed-ChatbotIT", str(root), "train")
    assert sorted(sizes) == sorted(Counter(train["user"]).values())
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert set(final["per_client"]) == {"0", "1", "2"}


@pytest.mark.slow
def test_chatbot_pa_pairs_train_federated_dpo_per_user(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = _write(tmp_path / "data", "FedLLM-Bench/Fed-ChatbotPA", _pairs())
    pairs = load_dpo_dataset("FedLLM-Bench/Fed-ChatbotPA", str(root), 0, "train")
    assert {"prompt", "chosen", "rejected", "user"} <= set(pairs.column_names)
    run = main_dpo.main(["--model_name_or_path", str(tiny_model_dir), "--dataset_name", "FedLLM-Bench/Fed-ChatbotPA",
                         "--local_data_dir", str(root), "--split_strategy", "natural", "--partition_column", "user",
                         "--num_clients", "2", "--sample_clients", "2", "--num_rounds", "1", "--max_steps", "1",
                         "--batch_size", "2", "--seq_length", "64", "--torch_threads", "1", "--eval_samples", "4",
                         "--eval_per_client", "8", "--bf16", "false", "--output_dir", str(tmp_path / "out")])
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert set(final["per_client"]) == {"0", "1"}


def test_a_history_column_of_other_local_files_is_left_alone(tmp_path: Path) -> None:
    """LLaMA-Factory's alpaca files carry history as [[query, answer], ...]; only FedLLM-Bench rows are multi-turn."""
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q{i}", "response": f"a{i}", "history": [["hi", "hello"]]})
                            + "\n" for i in range(4)))
    rows = load_sft_dataset(str(path), None, 0, "train")
    assert rows.column_names == ["instruction", "response"]
    assert len(tokenize_sft(rows, build_tiny_tokenizer(), "alpaca", 64)) == 4
