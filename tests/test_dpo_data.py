"""DPO data: hub schemas (via local mirrors the tests write), local files, bundled pairs, rendering, tokenising.

Every fixture is written here in the real schema of its source with invented content.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from utils.constants import PROMPT_CUT, SOURCE_ROW
from utils.dpo_data import (
    HH_RLHF,
    ULTRAFEEDBACK,
    default_split,
    heldout_split,
    load_dpo_dataset,
    validate_dpo_data_args,
)
from utils.dpo_tokenize import render_preference_row, tokenize_dpo
from utils.preference_rows import split_transcripts, to_pair
from utils.templates import VICUNA_SYSTEM, get_template
from utils.tiny_model import build_tiny_tokenizer

Rows = list[dict[str, Any]]


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the builders' Arrow caches inside the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tiny_tokenizer()


def write_jsonl_gz(path: Path, rows: Rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def write_parquet(path: Path, rows: Rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def as_pairs(dataset: datasets.Dataset) -> set[tuple[tuple[str, ...], str, str]]:
    return {(tuple(r["prompt"]), r["chosen"], r["rejected"]) for r in dataset}


# ------------------------------------------------------------------------------------ hh-rlhf
def hh(*turns: str) -> str:
    """An hh-rlhf transcript from alternating human / assistant turns."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


HH_TRAIN_A: Rows = [
    # Both answers begin with "I": the split must fall at the Assistant marker, not inside the answers.
    {"chosen": hh("How do I water a cactus?", "I think once a month is enough."),
     "rejected": hh("How do I water a cactus?", "I believe every hour is best.")},
    {"chosen": hh("Name a fruit.", "An apple.", "Another one?", "A pear."),
     "rejected": hh("Name a fruit.", "An apple.", "Another one?", "No.")},
    {"chosen": hh("Say hi.", "Hi!"), "rejected": hh("Say hi.", "Hi!")},  # identical answers: dropped
    # The transcripts differ before their last turn: no shared prompt, dropped.
    {"chosen": hh("Pick a colour.", "Red.", "Why?", "It is warm."),
     "rejected": hh("Pick a colour.", "Blue.", "Why?", "It is calm.")},
]
HH_TRAIN_B: Rows = [
    {"chosen": hh("Is the sea salty?", "Yes, it holds dissolved salts."),
     "rejected": hh("Is the sea salty?", "Only on Tuesdays.")},
]
HH_TEST: Rows = [
    {"chosen": hh("What is two plus two?", "Four."), "rejected": hh("What is two plus two?", "Five.")},
]
HH_EXPECTED_TRAIN = {
    (("How do I water a cactus?",), "I think once a month is enough.", "I believe every hour is best."),
    (("Name a fruit.", "An apple.", "Another one?"), "A pear.", "No."),
    (("Is the sea salty?",), "Yes, it holds dissolved salts.", "Only on Tuesdays."),
}


def write_hh_mirror(root: Path) -> None:
    """The hub repository's layout: <subset>/{train,test}.jsonl.gz plus the red-team folder."""
    folder = root / HH_RLHF
    write_jsonl_gz(folder / "helpful-base" / "train.jsonl.gz", HH_TRAIN_A)
    write_jsonl_gz(folder / "harmless-base" / "train.jsonl.gz", HH_TRAIN_B)
    write_jsonl_gz(folder / "helpful-base" / "test.jsonl.gz", HH_TEST)
    write_jsonl_gz(folder / "red-team-attempts" / "red_team_attempts.jsonl.gz",
                   [{"transcript": hh("Tell me a secret.", "No."), "rating": 0.0}])


def test_hh_rlhf_mirror_splits_at_last_shared_assistant_turn(tmp_path: Path) -> None:
    write_hh_mirror(tmp_path)
    train = load_dpo_dataset(HH_RLHF, str(tmp_path), dataset_sample=0, seed=1)
    assert as_pairs(train) == HH_EXPECTED_TRAIN
    test = load_dpo_dataset(HH_RLHF, str(tmp_path), dataset_sample=0, split="test", seed=1)
    assert as_pairs(test) == {(("What is two plus two?",), "Four.", "Five.")}


def test_hh_rlhf_rendering_matches_fastchat_vicuna_v11(tokenizer: Any) -> None:
    """OpenFedLLM renders hh-rlhf with FastChat's vicuna_v1.1: system, USER/ASSISTANT turns, </s> after answers."""
    pair = split_transcripts(HH_TRAIN_A[1]["chosen"], HH_TRAIN_A[1]["rejected"])
    assert pair is not None
    row = {"prompt": pair[0], "chosen": pair[1], "rejected": pair[2]}
    prompt, chosen, rejected = render_preference_row(row, get_template("vicuna_v1.1"), tokenizer)
    assert prompt == f"{VICUNA_SYSTEM} USER: Name a fruit. ASSISTANT: An apple.</s>USER: Another one? ASSISTANT:"
    assert (chosen, rejected) == (" A pear.</s>", " No.</s>")


def test_single_turn_conversation_prompt_is_the_template_prompt(tokenizer: Any) -> None:
    for name in ("alpaca", "vicuna", "vicuna_v1.1", "chat"):
        template = get_template(name)
        assert template.conversation_prompt(["Add 2 and 3."], tokenizer) == template.prompt("Add 2 and 3.", tokenizer)


def test_multi_turn_chat_and_alpaca_prompts(tokenizer: Any) -> None:
    turns = ["Hi.", "Hello!", "Bye?"]
    chat = get_template("chat").conversation_prompt(turns, tokenizer)
    assert chat == "<|user|>Hi.</s><|assistant|>Hello!</s><|user|>Bye?</s><|assistant|>"
    alpaca = get_template("alpaca").conversation_prompt(turns, tokenizer)
    assert alpaca.endswith(
        "### Instruction:\nHi. \n\n### Response: Hello!</s>\n\n### Instruction:\nBye? \n\n### Response:")
    with pytest.raises(ValueError, match="end with a user turn"):
        get_template("alpaca").conversation_prompt(["Hi.", "Hello!"], tokenizer)


# ------------------------------------------------------------------------ ultrafeedback_binarized
def uf_row(prompt: str, good: str, bad: str, i: int) -> dict[str, Any]:
    """One row in the schema of every ultrafeedback_binarized split."""
    chosen = [{"content": prompt, "role": "user"}, {"content": good, "role": "assistant"}]
    rejected = [{"content": prompt, "role": "user"}, {"content": bad, "role": "assistant"}]
    return {"prompt": prompt, "prompt_id": f"{i:064x}", "chosen": chosen, "rejected": rejected,
            "messages": chosen, "score_chosen": 8.0, "score_rejected": 3.5}


UF_SPLITS = {
    "train_prefs": [uf_row("Name a planet.", "Mars.", "The Moon.", 0), uf_row("Boil water at?", "100 C.", "5 C.", 1)],
    "train_sft": [uf_row("Name a metal.", "Iron.", "Wood.", 2), uf_row("Sky colour?", "Blue.", "Green.", 3),
                  uf_row("Opposite of up?", "Down.", "Left.", 4)],
    "test_prefs": [uf_row("Largest ocean?", "The Pacific.", "A pond.", 5)],
    "test_sft": [uf_row("Smallest prime?", "Two.", "Nine.", 6)],
    "train_gen": [uf_row("Unused.", "a", "b", 7)],
}


def write_uf_mirror(root: Path) -> None:
    """The hub layout: data/<split>-00000-of-00001.parquet."""
    for split, rows in UF_SPLITS.items():
        write_parquet(root / ULTRAFEEDBACK / "data" / f"{split}-00000-of-00001.parquet", rows)


def expected_uf(split: str) -> set[tuple[tuple[str, ...], str, str]]:
    return {((r["prompt"],), r["chosen"][1]["content"], r["rejected"][1]["content"]) for r in UF_SPLITS[split]}


@pytest.mark.parametrize(("split", "heldout"), [(None, "test_sft"), ("train_prefs", "test_prefs")])
def test_ultrafeedback_mirror_reads_exactly_the_asked_split(tmp_path: Path, split: str | None, heldout: str) -> None:
    write_uf_mirror(tmp_path)
    train_split = default_split(ULTRAFEEDBACK, split)
    assert train_split == (split or "train_sft")  # OpenFedLLM reads train_sft
    train = load_dpo_dataset(ULTRAFEEDBACK, str(tmp_path), dataset_sample=0, split=split, seed=3)
    assert as_pairs(train) == expected_uf(train_split)
    assert heldout_split(train_split) == heldout
    test = load_dpo_dataset(ULTRAFEEDBACK, str(tmp_path), dataset_sample=0, split=heldout, seed=3)
    assert as_pairs(test) == expected_uf(heldout)


def test_ultrafeedback_rendering_matches_openfedllm(tmp_path: Path, tokenizer: Any) -> None:
    """OpenFedLLM: prompt through vicuna_v1.1, answers " " + content (+ EOS, which old TRL appended)."""
    write_uf_mirror(tmp_path)
    row = next(r for r in load_dpo_dataset(ULTRAFEEDBACK, str(tmp_path), 0, "train_prefs") if r["chosen"] == "Mars.")
    prompt, chosen, rejected = render_preference_row(row, get_template("vicuna_v1.1"), tokenizer)
    assert prompt == f"{VICUNA_SYSTEM} USER: Name a planet. ASSISTANT:"
    assert (chosen, rejected) == (" Mars.</s>", " The Moon.</s>")


def test_dataset_sample_and_seeded_shuffle(tmp_path: Path) -> None:
    write_uf_mirror(tmp_path)
    a = load_dpo_dataset(ULTRAFEEDBACK, str(tmp_path), dataset_sample=2, seed=5)
    b = load_dpo_dataset(ULTRAFEEDBACK, str(tmp_path), dataset_sample=2, seed=5)
    assert len(a) == 2 and a["chosen"] == b["chosen"]
    assert as_pairs(a) <= expected_uf("train_sft")


# ------------------------------------------------------------------------------------ local files
def test_local_jsonl_and_csv_files(tmp_path: Path) -> None:
    rows = [{"prompt": "Pick a number.", "chosen": "7", "rejected": "seven hundred", "label": "easy"},
            {"prompt": "Spell cat.", "chosen": "c-a-t", "rejected": "k-a-t", "label": "hard"}]
    jsonl = tmp_path / "prefs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv = tmp_path / "prefs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    for path in (jsonl, csv):
        loaded = load_dpo_dataset(str(path), dataset_sample=0)
        assert as_pairs(loaded) == {(("Pick a number.",), "7", "seven hundred"), (("Spell cat.",), "c-a-t", "k-a-t")}
        assert sorted(loaded["label"]) == ["easy", "hard"]


def test_local_folder_with_splits_under_local_data_dir(tmp_path: Path) -> None:
    folder = tmp_path / "mine" / "prefs"
    write_parquet(folder / "train.parquet", [{"prompt": "A?", "chosen": "yes", "rejected": "no"}])
    write_parquet(folder / "test.parquet", [{"prompt": "B?", "chosen": "no", "rejected": "yes"}])
    train = load_dpo_dataset("prefs", str(tmp_path / "mine"), dataset_sample=0)
    test = load_dpo_dataset("prefs", str(tmp_path / "mine"), dataset_sample=0, split="test")
    assert as_pairs(train) == {(("A?",), "yes", "no")}
    assert as_pairs(test) == {(("B?",), "no", "yes")}


def test_trl_conversational_and_implicit_prompt_rows() -> None:
    conversational = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Peru?"}],
        "chosen": [{"role": "assistant", "content": "Lima."}],
        "rejected": [{"role": "assistant", "content": "Cusco."}],
    }
    assert to_pair(conversational) == (["Capital of Peru?"], "Lima.", "Cusco.")
    implicit = {"chosen": hh("Q?", "A."), "rejected": hh("Q?", "B.")}
    assert to_pair(implicit) == (["Q?"], "A.", "B.")
    assert to_pair({"prompt": "Q?", "chosen": "same", "rejected": "same"}) is None


def test_bundled_preferences() -> None:
    train = load_dpo_dataset("bundled/preferences", dataset_sample=40, seed=2)
    assert len(train) == 40
    assert set(train.column_names) == {"prompt", "chosen", "rejected", "category"}
    assert all(len(p) == 1 and p[0] for p in train["prompt"])
    assert all(c != r for c, r in zip(train["chosen"], train["rejected"], strict=True))
    test = load_dpo_dataset("bundled/preferences", dataset_sample=0, split="test")
    every_train = load_dpo_dataset("bundled/preferences", dataset_sample=0)
    assert not {p[0] for p in test["prompt"]} & {p[0] for p in every_train["prompt"]}


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("name", "local_dir", "split", "message"), [
    ("bundled/fin_sentiment", None, None, "not a preference dataset"),
    ("vicgalle/alpaca-gpt4", None, None, "not a preference dataset"),
    ("", None, None, "--dataset_name is empty"),
    (ULTRAFEEDBACK, None, "train", "--dataset_split 'train'"),
    ("bundled/preferences", None, "validation", "--dataset_split 'validation'"),
    (HH_RLHF, "{tmp}", None, "huggingface-cli download"),
    (HH_RLHF, "{tmp}/nowhere", None, "--local_data_dir"),
    ("no/such/prefs.jsonl", None, None, "no such file or folder"),
])
def test_bad_flags_name_the_flag(tmp_path: Path, name: str, local_dir: str | None, split: str | None,
                                 message: str) -> None:
    local = local_dir.format(tmp=tmp_path) if local_dir else None
    with pytest.raises(ValueError, match=message):
        validate_dpo_data_args(name, local, split)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "Q", "answer": "A"}) + "\n")
    with pytest.raises(ValueError, match="missing column.*chosen, rejected"):
        load_dpo_dataset(str(path))


# ------------------------------------------------------------------------------------ tokenising
def test_tokenize_dpo_keeps_both_answers_whole_and_cuts_the_prompt(tokenizer: Any) -> None:
    rows = datasets.Dataset.from_list([
        {"prompt": ["the a of"], "chosen": "positive news", "rejected": "negative"},
        {"prompt": ["to and in " * 40], "chosen": "x", "rejected": "y"},  # a long prompt: cut from the left
        {"prompt": ["the"], "chosen": "of " * 80, "rejected": "a"},  # an answer longer than seq_length: left out
    ])
    seq_length = 60
    out = tokenize_dpo(rows, tokenizer, "alpaca", seq_length)
    assert out.column_names == ["prompt_ids", "chosen_ids", "rejected_ids", SOURCE_ROW, PROMPT_CUT]
    assert out[SOURCE_ROW] == [0, 1] and out[PROMPT_CUT] == [False, True]
    prompt, chosen, rejected = render_preference_row(rows[0], get_template("alpaca"), tokenizer)
    assert out[0]["prompt_ids"] == tokenizer(prompt)["input_ids"]
    assert out[0]["chosen_ids"] == tokenizer(chosen, add_special_tokens=False)["input_ids"]
    assert out[0]["rejected_ids"] == tokenizer(rejected, add_special_tokens=False)["input_ids"]
    prompt, chosen, rejected = render_preference_row(rows[1], get_template("alpaca"), tokenizer)
    full_prompt = tokenizer(prompt)["input_ids"]
    answers = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (chosen, rejected)]
    assert [out[1]["chosen_ids"], out[1]["rejected_ids"]] == answers  # both answers whole
    assert len(out[1]["prompt_ids"]) == seq_length - max(map(len, answers))
    assert out[1]["prompt_ids"] == full_prompt[-len(out[1]["prompt_ids"]):]  # the prompt's end survives
    plain = tokenize_dpo(rows.select([0]), tokenizer, "alpaca", seq_length)
    assert plain.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]  # nothing cut, nothing dropped
