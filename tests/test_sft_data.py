"""SFT dataset loading: hub mappings (via local mirrors), plain local files, bundled dispatch, errors.

Every fixture is written here in the real schema of its source with invented content.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from utils.sft_data import HUB_SFT_DATASETS, MATH_SUBJECTS, SFT_ALIASES, load_sft_dataset, validate_sft_data_args

Rows = list[dict[str, Any]]


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the builders' Arrow caches inside the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def write_rows(path: Path, rows: Rows) -> Path:
    """Write ``rows`` in the format named by the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":  # a JSON array, as alpaca-style hub repos ship it
        path.write_text(json.dumps(rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        path.write_text("not data")
    return path


def pairs(dataset: datasets.Dataset) -> set[tuple[str, str]]:
    return set(zip(dataset["instruction"], dataset["response"], strict=True))


ALPACA_ROWS: Rows = [
    {"instruction": "Name a colour of the sky.", "input": "", "output": "Blue."},
    {"instruction": "Translate to French.", "input": "good morning", "output": "bonjour"},
    {"instruction": "Sum the numbers.", "input": "3 and 4", "output": "7"},
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
    {"instruction": "Classify the tone.", "input": "I love it", "output": "positive"},
    {"instruction": "Reverse the word.", "input": "stop", "output": "pots"},
]
ALPACA_EXPECTED = {
    ("Name a colour of the sky.", "Blue."),
    ("Translate to French. good morning", "bonjour"),
    ("Sum the numbers. 3 and 4", "7"),
    ("Say hello.", "Hello!"),
    ("Classify the tone. I love it", "positive"),
    ("Reverse the word. stop", "pots"),
}
# (hub name, file inside its mirror as the Hub lists it, whether the source has the extra "text" column)
ALPACA_LAYOUTS = [
    ("vicgalle/alpaca-gpt4", "data/train-00000-of-00001-6ef3991c06080e14.parquet", True),
    ("tatsu-lab/alpaca", "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet", True),
    ("gbharti/finance-alpaca", "Cleaned_date.json", True),
    ("yahma/alpaca-cleaned", "alpaca_data_cleaned.json", False),
    ("lucasmccabe-lmi/CodeAlpaca-20k", "data/train-00000-of-00001-e270777bb989ac86.parquet", False),
    ("FinGPT/fingpt-sentiment-train", "data/train-00000-of-00001-dabab110260ac909.parquet", False),
]


@pytest.mark.parametrize(("name", "relpath", "has_text"), ALPACA_LAYOUTS)
def test_alpaca_format_hub_datasets(tmp_path: Path, name: str, relpath: str, has_text: bool) -> None:
    rows = [dict(r, text=f"### Instruction: {r['instruction']}") if has_text else dict(r) for r in ALPACA_ROWS]
    write_rows(tmp_path / name / relpath, rows)
    validate_sft_data_args(name, str(tmp_path))
    out = load_sft_dataset(name, local_data_dir=str(tmp_path), dataset_sample=None)
    assert out.column_names == ["instruction", "response"]
    assert pairs(out) == ALPACA_EXPECTED


@pytest.mark.parametrize("folder", ["WizardLMTeam/WizardLM_evol_instruct_70k", "WizardLM/WizardLM_evol_instruct_70k"])
def test_wizardlm_renames_output(tmp_path: Path, folder: str) -> None:
    """WizardLMTeam/WizardLM_evol_instruct_70k (the org was renamed from WizardLM): alpaca_evol_instruct_70k.json;
    OpenFedLLM's old name keeps working, with a mirror under either name."""
    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(6)]
    write_rows(tmp_path / folder / "alpaca_evol_instruct_70k.json", rows)
    for name in ("WizardLM/WizardLM_evol_instruct_70k", "WizardLMTeam/WizardLM_evol_instruct_70k"):
        out = load_sft_dataset(name, str(tmp_path), None)
        assert out.column_names == ["instruction", "response"]
        assert pairs(out) == {(f"Question {i}?", f"Answer {i}.") for i in range(6)}


def test_mathinstruct_dedups_keeping_first(tmp_path: Path) -> None:
    rows = [
        {"source": "data/CoT/a.json", "output": "first 2", "instruction": "What is 1+1?"},
        {"source": "data/PoT/b.json", "output": "print(6)", "instruction": "What is 2*3?"},
        {"source": "data/CoT/c.json", "output": "9", "instruction": "What is 3*3?"},
        {"source": "data/CoT/d.json", "output": "second 2", "instruction": "What is 1+1?"},
        {"source": "data/PoT/e.json", "output": "print(2*3)", "instruction": "What is 2*3?"},
        {"source": "data/CoT/f.json", "output": "0", "instruction": "What is 5-5?"},
    ]
    write_rows(tmp_path / "TIGER-Lab/MathInstruct/MathInstruct.json", rows)
    out = load_sft_dataset("TIGER-Lab/MathInstruct", str(tmp_path), None)
    assert out.column_names == ["instruction", "response"]
    assert pairs(out) == {
        ("What is 1+1?", "first 2"),
        ("What is 2*3?", "print(6)"),
        ("What is 3*3?", "9"),
        ("What is 5-5?", "0"),
    }


def _math_rows(tag: str) -> Rows:
    types_ = ["Algebra", "Geometry", "Algebra", "Number Theory", "Precalculus", "Geometry"]
    return [
        {"problem": f"{tag} problem {i}", "level": f"Level {i % 5 + 1}", "type": t, "solution": f"{tag} solution {i}"}
        for i, t in enumerate(types_)
    ]


@pytest.mark.parametrize("name", ["EleutherAI/hendrycks_math", "lighteval/MATH"])
def test_math_joins_the_subjects_and_keeps_type_as_category(tmp_path: Path, name: str) -> None:
    """EleutherAI/hendrycks_math: <subject>/{train,test}-00000-of-00001.parquet, no "all" config; lighteval/MATH
    (OpenFedLLM's name, taken down from the Hub) is an alias for it."""
    mirror = tmp_path / "EleutherAI/hendrycks_math"
    rows = _math_rows("train")
    write_rows(mirror / "algebra/train-00000-of-00001.parquet", [r for r in rows if r["type"] == "Algebra"])
    write_rows(mirror / "geometry/train-00000-of-00001.parquet", [r for r in rows if r["type"] == "Geometry"])
    write_rows(mirror / "number_theory/train-00000-of-00001.parquet", [r for r in rows if r["type"] == "Number Theory"])
    write_rows(mirror / "precalculus/train-00000-of-00001.parquet", [r for r in rows if r["type"] == "Precalculus"])
    write_rows(mirror / "algebra/test-00000-of-00001.parquet", _math_rows("test")[:3])
    out = load_sft_dataset(name, str(tmp_path), None)
    assert out.column_names == ["instruction", "response", "category"]
    got = {(r["instruction"], r["response"], r["category"]) for r in out}
    assert got == {(r["problem"], r["solution"], r["type"]) for r in rows}
    test = load_sft_dataset(name, str(tmp_path), None, split="test")
    assert sorted(test["instruction"]) == [f"test problem {i}" for i in range(3)]


@pytest.mark.parametrize("name", ["openai/gsm8k", "gsm8k"])
def test_gsm8k_main_config_and_splits(tmp_path: Path, name: str) -> None:
    """openai/gsm8k: {main,socratic}/{train,test}-00000-of-00001.parquet; "gsm8k" (OpenFedLLM's name) is an alias."""
    mirror = tmp_path / "openai/gsm8k"
    train = [{"question": f"Tom has {i} apples. How many?", "answer": f"He has {i}.\n#### {i}"} for i in range(6)]
    write_rows(mirror / "main/train-00000-of-00001.parquet", train)
    write_rows(mirror / "main/test-00000-of-00001.parquet", [{"question": "Q?", "answer": "#### 1"}])
    write_rows(mirror / "socratic/train-00000-of-00001.parquet", [{"question": "S?", "answer": "#### 2"}])
    out = load_sft_dataset(name, str(tmp_path), None)
    assert out.column_names == ["instruction", "response"]
    assert pairs(out) == {(r["question"], r["answer"]) for r in train}
    assert pairs(load_sft_dataset(name, str(tmp_path), None, split="test")) == {("Q?", "#### 1")}


def test_medical_flashcards_use_input_as_instruction(tmp_path: Path) -> None:
    fixed = "Answer this question truthfully"
    rows = [
        {"input": f"What does organ {i} do?", "output": f"Organ {i} filters things.", "instruction": fixed}
        for i in range(6)
    ]
    write_rows(
        tmp_path / "medalpaca/medical_meadow_medical_flashcards/medical_meadow_wikidoc_medical_flashcards.json", rows
    )
    out = load_sft_dataset("medalpaca/medical_meadow_medical_flashcards", str(tmp_path), None)
    assert out.column_names == ["instruction", "response"]
    assert pairs(out) == {(f"What does organ {i} do?", f"Organ {i} filters things.") for i in range(6)}


def test_every_hub_dataset_has_a_mirror_test() -> None:
    tested = {n for n, _, _ in ALPACA_LAYOUTS} | {
        "WizardLMTeam/WizardLM_evol_instruct_70k",
        "TIGER-Lab/MathInstruct",
        "EleutherAI/hendrycks_math",
        "openai/gsm8k",
        "medalpaca/medical_meadow_medical_flashcards",
    }
    assert tested == set(HUB_SFT_DATASETS)
    assert set(SFT_ALIASES.values()) <= tested


@pytest.mark.parametrize("trailing_slash", [True, False])
def test_local_data_dir_with_or_without_trailing_slash(tmp_path: Path, trailing_slash: bool) -> None:
    write_rows(tmp_path / "yahma/alpaca-cleaned/alpaca_data_cleaned.json", ALPACA_ROWS)
    local_dir = str(tmp_path) + ("/" if trailing_slash else "")
    assert pairs(load_sft_dataset("yahma/alpaca-cleaned", local_dir, None)) == ALPACA_EXPECTED


def test_hub_path_calls_load_dataset_with_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(name: str, config: str | None = None, split: str | None = None) -> datasets.Dataset:
        calls.append((name, config, split))
        if name == "EleutherAI/hendrycks_math" and config != "algebra":
            return datasets.Dataset.from_list([{"problem": f"{config}?", "level": "Level 1", "type": config,
                                                "solution": "S"}])
        return datasets.Dataset.from_list(
            [
                {
                    "question": "Q?",
                    "answer": "A",
                    "problem": "P?",
                    "level": "Level 1",
                    "type": "Algebra",
                    "solution": "S",
                    **ALPACA_ROWS[1],
                }
            ]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_sft_dataset("gsm8k", split="test")[0] == {"instruction": "Q?", "response": "A"}
    math = load_sft_dataset("lighteval/MATH", dataset_sample=None)
    assert len(math) == 7 and {"instruction": "P?", "response": "S", "category": "Algebra"} in list(math)
    assert load_sft_dataset("tatsu-lab/alpaca")[0] == {
        "instruction": "Translate to French. good morning",
        "response": "bonjour",
    }
    math_calls = [("EleutherAI/hendrycks_math", subject, "train") for subject in MATH_SUBJECTS]
    assert calls == [("openai/gsm8k", "main", "test"), *math_calls, ("tatsu-lab/alpaca", None, "train")]


# ---- shuffle and sampling ------------------------------------------------------------------------


def _numbered(n: int) -> Rows:
    return [{"instruction": f"instruction {i}", "response": f"response {i}"} for i in range(n)]


def test_sample_is_first_rows_of_seeded_shuffle(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "data.jsonl", _numbered(20))
    out = load_sft_dataset(str(path), dataset_sample=5)
    # datasets' shuffle(seed) is numpy's default_rng(seed).permutation, as in OpenFedLLM.
    order = np.random.default_rng(2023).permutation(20)[:5]
    assert out["instruction"] == [f"instruction {i}" for i in order]
    assert out["response"] == [f"response {i}" for i in order]
    assert load_sft_dataset(str(path), dataset_sample=5)["instruction"] == out["instruction"]
    assert load_sft_dataset(str(path), dataset_sample=5, seed=7)["instruction"] != out["instruction"]


@pytest.mark.parametrize(("sample", "expected"), [(None, 20), (0, 20), (7, 7), (500, 20)])
def test_dataset_sample_sizes(tmp_path: Path, sample: int | None, expected: int) -> None:
    path = write_rows(tmp_path / "data.jsonl", _numbered(20))
    out = load_sft_dataset(str(path), dataset_sample=sample)
    assert len(out) == expected
    assert len(set(out["instruction"])) == expected


# ---- plain local files ---------------------------------------------------------------------------

LABELLED: Rows = [
    {"instruction": f"Rate text {i}", "response": ["negative", "positive"][i % 2], "label": i % 2} for i in range(6)
]


@pytest.mark.parametrize("ext", ["json", "jsonl", "csv", "parquet"])
def test_local_file_each_extension_keeps_label(tmp_path: Path, ext: str) -> None:
    path = write_rows(tmp_path / f"mine.{ext}", LABELLED)
    validate_sft_data_args(str(path), None)
    out = load_sft_dataset(str(path), dataset_sample=None)
    assert out.column_names == ["instruction", "response", "label"]
    assert {(r["instruction"], r["response"], r["label"]) for r in out} == {
        (r["instruction"], r["response"], r["label"]) for r in LABELLED
    }


@pytest.mark.parametrize("ext", ["json", "csv"])
def test_local_alpaca_file_with_category(tmp_path: Path, ext: str) -> None:
    rows = [dict(r, category=f"c{i % 2}", extra="dropped") for i, r in enumerate(ALPACA_ROWS)]
    path = write_rows(tmp_path / f"alpaca.{ext}", rows)
    out = load_sft_dataset(str(path), dataset_sample=None)
    assert out.column_names == ["instruction", "response", "category"]
    assert pairs(out) == ALPACA_EXPECTED  # CSV's empty inputs read as missing: still no trailing space
    assert sorted(out["category"]) == ["c0", "c0", "c0", "c1", "c1", "c1"]


def test_csv_keeps_numeric_looking_text(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "codes.csv",
        [{"instruction": "Code?", "response": "007"}, {"instruction": "Year?", "response": "1999"}],
    )
    assert pairs(load_sft_dataset(str(path), dataset_sample=None)) == {("Code?", "007"), ("Year?", "1999")}


def test_local_folder_picks_split_files(tmp_path: Path) -> None:
    write_rows(tmp_path / "mydata/train.jsonl", _numbered(4))
    write_rows(tmp_path / "mydata/test.jsonl", [{"instruction": "held out", "response": "yes"}])
    write_rows(tmp_path / "mydata/.cache/train.jsonl", [{"instruction": "hidden", "response": "no"}])
    assert sorted(load_sft_dataset(str(tmp_path / "mydata"), dataset_sample=None)["instruction"]) == [
        f"instruction {i}" for i in range(4)
    ]
    assert load_sft_dataset(str(tmp_path / "mydata"), split="test")["instruction"] == ["held out"]


def test_local_folder_without_split_names_is_train(tmp_path: Path) -> None:
    write_rows(tmp_path / "mydata/part_a.jsonl", _numbered(3))
    write_rows(tmp_path / "mydata/part_b.jsonl", [{"instruction": "four", "response": "4"}])
    assert len(load_sft_dataset(str(tmp_path / "mydata"), dataset_sample=None)) == 4
    with pytest.raises(ValueError, match="split 'test' does not exist"):
        load_sft_dataset(str(tmp_path / "mydata"), split="test")


def test_unknown_name_found_under_local_data_dir(tmp_path: Path) -> None:
    write_rows(tmp_path / "myorg/mydata/train.parquet", LABELLED)
    out = load_sft_dataset("myorg/mydata", local_data_dir=str(tmp_path), dataset_sample=None)
    assert out.column_names == ["instruction", "response", "label"] and len(out) == 6


# ---- bundled datasets ----------------------------------------------------------------------------


def test_bundled_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_bundled(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        if name == "bundled/fin_sentiment":
            return datasets.Dataset.from_list(
                [
                    {
                        "instruction": "What is the sentiment?",
                        "input": "Shares rose 5%.",
                        "output": "positive",
                        "label": 2,
                    }
                ]
            )
        return datasets.Dataset.from_list([{"question": "2+2?", "answer": "#### 4", "category": "addition"}])

    monkeypatch.setitem(sys.modules, "utils.bundled", types.SimpleNamespace(load_bundled=load_bundled))
    validate_sft_data_args("bundled/fin_sentiment", None)
    assert calls == []  # validation stays cheap: nothing generated
    fin = load_sft_dataset("bundled/fin_sentiment")
    assert fin.column_names == ["instruction", "response", "label"]
    assert fin[0] == {"instruction": "What is the sentiment? Shares rose 5%.", "response": "positive", "label": 2}
    arith = load_sft_dataset("bundled/arithmetic", split="test")
    assert arith[0] == {"instruction": "2+2?", "response": "#### 4", "category": "addition"}
    assert calls == [("bundled/fin_sentiment", "train"), ("bundled/arithmetic", "test")]


@pytest.mark.parametrize(("name", "extra"), [("bundled/fin_sentiment", "label"), ("bundled/arithmetic", "category")])
def test_real_bundled_module(name: str, extra: str) -> None:
    bundled = pytest.importorskip("utils.bundled")
    if not hasattr(bundled, "load_bundled"):
        pytest.skip("utils.bundled does not expose load_bundled yet")
    out = load_sft_dataset(name, dataset_sample=8)
    assert out.column_names == ["instruction", "response", extra] and len(out) == 8
    assert all(isinstance(t, str) and t for t in [*out["instruction"], *out["response"]])
    test = load_sft_dataset(name, dataset_sample=None, split="test")
    assert not set(test["instruction"]) & set(load_sft_dataset(name, dataset_sample=None)["instruction"])


# ---- errors --------------------------------------------------------------------------------------


def test_error_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"(?s)not a supported dataset.*gsm8k.*--local_data_dir"):
        validate_sft_data_args("someone/unknown-set", None)


def test_error_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file or folder"):
        validate_sft_data_args(str(tmp_path / "missing.json"), None)


def test_error_unsupported_extension(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "data.txt", [])
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        validate_sft_data_args(str(path), None)


def test_error_missing_local_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--local_data_dir .*no such folder"):
        validate_sft_data_args("gsm8k", str(tmp_path / "nowhere"))


def test_error_hub_mirror_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected the folder .*gsm8k.*huggingface-cli download"):
        validate_sft_data_args("gsm8k", str(tmp_path))


def test_error_mirror_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "openai/gsm8k").mkdir(parents=True)
    (tmp_path / "openai/gsm8k/README.md").write_text("# readme")
    with pytest.raises(ValueError, match="holds no .parquet/.json/.jsonl/.csv files"):
        validate_sft_data_args("gsm8k", str(tmp_path))


def test_error_local_file_missing_columns(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "bad.jsonl", [{"prompt": "x", "response": "y"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl: missing column\(s\) instruction .*Expected instruction"):
        load_sft_dataset(str(path))


def test_error_hub_mirror_missing_columns(tmp_path: Path) -> None:
    write_rows(tmp_path / "openai/gsm8k/main/train-00000-of-00001.parquet", [{"question": "Q?", "solution": "A"}])
    with pytest.raises(ValueError, match=r"gsm8k: missing column\(s\) answer .*question, answer"):
        load_sft_dataset("gsm8k", str(tmp_path))


def test_error_missing_split(tmp_path: Path) -> None:
    write_rows(tmp_path / "openai/gsm8k/main/train-00000-of-00001.parquet", [{"question": "Q?", "answer": "A"}])
    write_rows(tmp_path / "openai/gsm8k/main/test-00000-of-00001.parquet", [{"question": "Q?", "answer": "A"}])
    with pytest.raises(ValueError, match="no files for split 'validation'"):
        load_sft_dataset("gsm8k", str(tmp_path), split="validation")


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("bundled/preferences", "preference \\(DPO\\) dataset"),
        ("bundled/nothing", "no such bundled dataset"),
        ("", "--dataset_name is empty"),
    ],
)
def test_error_bad_names(name: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        validate_sft_data_args(name, None)


def test_error_negative_sample(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", _numbered(2))
    with pytest.raises(ValueError, match="--dataset_sample -1"):
        load_sft_dataset(str(path), dataset_sample=-1)
