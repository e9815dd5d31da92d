"""FedLLM-Bench's naturally split datasets (Ye et al., 2024, "FedLLM-Bench: Realistic Benchmarks for Federated
Learning of Large Language Models"), read from the folder its release unzips into.

The release (a zip linked from the rui-ye/FedLLM-Bench README, not on the Hub) holds one JSON file
per dataset whose top level maps each client (a real user, or a language for Fed-Aya) to that
client's list of rows; its own loader (``utils/benchmark_dataset.py: get_fed_datasets``) makes one
client per key. Paths under ``--local_data_dir``, as the release's training scripts name them:

=================================  ====================================================  ====  =====================
``--dataset_name``                 file                                                  task  row fields
=================================  ====================================================  ====  =====================
``FedLLM-Bench/Fed-Aya``           ``Fed-Aya/aya_38c_25k.json``                          SFT   instruction, response
``FedLLM-Bench/Fed-ChatbotIT``     ``Fed-ChatbotIT/chatbotIT_237c_6k.json``              SFT   instruction, response
``FedLLM-Bench/Fed-WildChat``      ``Fed-WildChat/single_turn/wildchat_100c_53k.json``   SFT   instruction, response
``FedLLM-Bench/Fed-WildChat-MT``   ``Fed-WildChat/multi_turn/wildchat_50c.json``         SFT   conversations
``FedLLM-Bench/Fed-ChatbotPA``     ``Fed-ChatbotPA/chatbotPA_747c_10k.json``             DPO   prompt, chosen, rejected
=================================  ====================================================  ====  =====================

``conversations`` is a list of ``{"from": "human" | "gpt", "value": text}`` turns, alternating from
a human turn; each gpt turn becomes one SFT row, its human turn the instruction and the earlier
turns its ``history`` (FedLLM-Bench trains every gpt turn of a conversation in one sequence: the
same targets, each with its own context here). Every row gets a ``user`` column (the client's key),
so ``--split_strategy natural --partition_column user --num_clients <number of keys>`` reproduces
the benchmark's clients.

The release has no held-out split. ``split="test"`` here is each client's own held-out rows:
about ``HELD_OUT_FRACTION`` of them, chosen by a checksum of the row's content (stable across
runs and machines, independent of the file's order), at least one per client with two or more
rows; ``split="train"`` is the rest, so the two never share a row.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

RELEASE = "the FedLLM-Bench data zip linked from https://github.com/rui-ye/FedLLM-Bench (README, 'Data')"
HELD_OUT_FRACTION = 0.1
USER = "user"


@dataclass(frozen=True)
class BenchDataset:
    """One dataset of the release: its file under ``--local_data_dir``, its task and its row layout."""

    file: str
    task: str  # "sft" or "dpo"
    fields: tuple[str, ...]  # what each row must hold


FEDLLM_BENCH: dict[str, BenchDataset] = {
    "FedLLM-Bench/Fed-Aya": BenchDataset("Fed-Aya/aya_38c_25k.json", "sft", ("instruction", "response")),
    "FedLLM-Bench/Fed-ChatbotIT": BenchDataset("Fed-ChatbotIT/chatbotIT_237c_6k.json", "sft",
                                               ("instruction", "response")),
    "FedLLM-Bench/Fed-WildChat": BenchDataset("Fed-WildChat/single_turn/wildchat_100c_53k.json", "sft",
                                              ("instruction", "response")),
    "FedLLM-Bench/Fed-WildChat-MT": BenchDataset("Fed-WildChat/multi_turn/wildchat_50c.json", "sft",
                                                 ("conversations",)),
    "FedLLM-Bench/Fed-ChatbotPA": BenchDataset("Fed-ChatbotPA/chatbotPA_747c_10k.json", "dpo",
                                               ("prompt", "chosen", "rejected")),
}


def bench_file(name: str, local_data_dir: str | None) -> Path:
    """The file of FedLLM-Bench dataset ``name``; a ValueError naming ``--local_data_dir`` when it is not there."""
    spec = FEDLLM_BENCH[name]
    if not local_data_dir:
        raise ValueError(f"--dataset_name {name} is read from a local copy of {RELEASE}: pass --local_data_dir "
                         f"<folder> holding {spec.file}")
    path = Path(local_data_dir).expanduser() / spec.file
    if not path.is_file():
        raise ValueError(f"--local_data_dir {local_data_dir}: {name} expects {path} ({RELEASE}, unzipped there)")
    return path


def _held_out(row: dict[str, Any]) -> int:
    """The row's checksum: below ``HELD_OUT_FRACTION`` x 10,000 it is held out."""
    return zlib.crc32(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8")) % 10_000


def client_split(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """One client's rows of ``split`` (train / test, see the module docstring)."""
    keys = [_held_out(row) for row in rows]
    test = {i for i, key in enumerate(keys) if key < HELD_OUT_FRACTION * 10_000}
    if not test and len(rows) > 1:
        test = {min(range(len(rows)), key=keys.__getitem__)}
    if len(test) == len(rows) and len(rows) > 1:  # keep something to train on
        test.discard(max(test, key=keys.__getitem__))
    return [row for i, row in enumerate(rows) if (i in test) == (split == "test")]


def _turn_rows(conversation: Any, where: str) -> list[dict[str, Any]]:
    """One SFT row per gpt turn of a conversation: its human turn, its answer, the turns before them."""
    if not isinstance(conversation, list) or not conversation:
        raise ValueError(f"{where}: 'conversations' must be a non-empty list of turns")
    turns = []
    for turn in conversation:
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or not isinstance(
                turn.get("value"), str):
            raise ValueError(f"{where}: each turn must be {{\"from\": \"human\" | \"gpt\", \"value\": text}}")
        turns.append((turn["from"], turn["value"]))
    if turns[0][0] != "human":  # as FedLLM-Bench's preprocessing: a conversation starts with its first human turn
        turns = turns[1:]
    if any(role != ("human", "gpt")[i % 2] for i, (role, _) in enumerate(turns)):
        raise ValueError(f"{where}: turns must alternate human, gpt, human, ...")
    texts = [text for _, text in turns]
    return [{"instruction": texts[i - 1], "response": texts[i], "history": texts[:i - 1]}
            for i in range(1, len(texts), 2)]


def load_bench(name: str, local_data_dir: str | None, split: str) -> datasets.Dataset:
    """The rows of ``split`` of FedLLM-Bench dataset ``name``, each with its client's key as ``user``."""
    import datasets

    spec = FEDLLM_BENCH[name]
    path = bench_file(name, local_data_dir)
    if split not in ("train", "test"):
        raise ValueError(f"--dataset_split {split!r}: {name} has train and test (each client's held-out rows)")
    try:
        clients = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as JSON ({err}); expected {RELEASE}") from err
    if not isinstance(clients, dict) or not all(isinstance(rows, list) for rows in clients.values()):
        raise ValueError(f"{path}: expected a JSON object mapping each client to its list of rows (the release's "
                         "layout), got another structure")
    out: list[dict[str, Any]] = []
    for client, rows in clients.items():
        for index, row in enumerate(client_split(rows, split)):
            where = f"{path}: client {client!r}, row {index}"
            if not isinstance(row, dict) or any(field not in row for field in spec.fields):
                raise ValueError(f"{where}: each row must have {', '.join(spec.fields)}")
            if spec.fields == ("conversations",):
                out += [{**r, USER: str(client)} for r in _turn_rows(row["conversations"], where)]
            else:
                out.append({**{field: row[field] for field in spec.fields}, USER: str(client)})
    if not out:
        raise ValueError(f"{path}: no rows for the {split} split")
    return datasets.Dataset.from_list(out)
