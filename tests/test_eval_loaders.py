"""Every benchmark's loader on a fixture written here in the real schema (invented content), plus scoring.

Scoring is checked with canned completions in place of a model, so each benchmark's extract + score
path is verified against hand-computed values without generation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evaluation.registry as registry
from evaluation.registry import EvalSettings, available, get_benchmark


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])


def _load(name: str, data_dir: Path | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return get_benchmark(name).load(EvalSettings(data_dir=str(data_dir) if data_dir else None, **kwargs))


def _score_with(monkeypatch: pytest.MonkeyPatch, name: str, examples: list[dict], completions: list[str]) -> dict:
    """Run a generative benchmark's evaluate() with canned completions instead of a model."""
    monkeypatch.setattr(registry, "generate_greedy", lambda model, tok, prompts, **kw: list(completions))

    class Tok:  # the alpaca template never touches the tokenizer
        pass

    return get_benchmark(name).evaluate(None, Tok(), examples, EvalSettings()).metrics


def test_registry_has_every_benchmark_and_30_metrics() -> None:
    names = set(available())
    assert {"fpb", "fiqa_sa", "tfns", "nwgi", "medqa", "medmcqa", "pubmedqa", "mmlu", "gsm8k", "math", "humaneval",
            "mbpp", "advbench", "mt_bench", "vicuna_bench", "heldout_loss", "dpo_preference", "bundled_sentiment",
            "bundled_arithmetic", "bundled_preferences"} <= names
    metrics = {f"{n}/{m}" for n, cls in available().items() for m in cls.metric_names}
    assert len(metrics) >= 30
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("nope")


def test_fpb(tmp_path: Path) -> None:
    rows = [{"sentence": f"Sales item {i} moved.", "label": i % 3} for i in range(8)]
    _jsonl(tmp_path / "takala/financial_phrasebank/sentences_50agree/train.jsonl", rows)
    examples = _load("fpb", tmp_path)
    assert len(examples) == 2  # FinGPT's 25% test split
    by_text = {r["sentence"]: ("negative", "neutral", "positive")[r["label"]] for r in rows}
    for ex in examples:
        assert ex["reference"] == by_text[ex["text"]]
        assert ex["instruction"].startswith("What is the sentiment of this news?")


def test_fiqa_sa_joins_splits_and_thresholds(tmp_path: Path) -> None:
    folder = tmp_path / "pauri32/fiqa-2018"
    scores = [-0.5, -0.1, 0.0, 0.09, 0.1, 0.6, -0.2, 0.3, 0.05, -0.05]
    for split, chunk in (("train", range(0, 6)), ("valid", range(6, 8)), ("test", range(8, 10))):
        _jsonl(folder / f"{split}.jsonl", [{"sentence": f"s{i}", "snippets": "x", "target": "T", "aspects": "a",
                                            "sentiment_score": scores[i], "format": "post" if i % 2 else "headline"}
                                           for i in chunk])
    examples = _load("fiqa_sa", folder.parent.parent)
    assert len(examples) == 3  # ceil(0.226 * 10)
    for ex in examples:
        i = int(ex["text"][1:])
        expected = "negative" if scores[i] < -0.1 else "neutral" if scores[i] < 0.1 else "positive"
        assert ex["reference"] == expected
        assert ("tweet" in ex["instruction"]) == bool(i % 2)


def test_tfns_reads_the_validation_csv(tmp_path: Path) -> None:
    folder = tmp_path / "zeroshot/twitter-financial-news-sentiment"
    _csv(folder / "sent_train.csv", ["text", "label"], [["train row", 0]])
    _csv(folder / "sent_valid.csv", ["text", "label"], [["$ABC down", 0], ["$ABC up", 1], ["$ABC flat", 2]])
    examples = _load("tfns", tmp_path)
    assert [(e["text"], e["reference"]) for e in examples] == [
        ("$ABC down", "negative"), ("$ABC up", "positive"), ("$ABC flat", "neutral")]
    assert "tweet" in examples[0]["instruction"]


def test_nwgi_folds_seven_levels(tmp_path: Path) -> None:
    labels = ["strong negative", "moderately negative", "mildly negative", "neutral", "mildly positive",
              "moderately positive", "strong positive"]
    _parquet(tmp_path / "oliverwang15/news_with_gpt_instructions/data/test-00000-of-00001.parquet",
             [{"news": f"n{i}", "label": lab, "prompt": "p", "out": "o"} for i, lab in enumerate(labels)])
    examples = _load("nwgi", tmp_path)
    assert [e["reference"] for e in examples] == ["negative", "negative", "neutral", "neutral", "neutral",
                                                  "positive", "positive"]


def test_sentiment_scoring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    examples = [{"id": i, "instruction": "I", "text": "t", "reference": r}
                for i, r in enumerate(["positive", "positive", "negative", "neutral"])]
    metrics = _score_with(monkeypatch, "fpb", examples, ["Positive.", "negative", "negative", "no idea"])
    # "no idea" counts as neutral (FinGPT): 3/4 right; F1 per class: pos 2/3, neg 2/3, neu 1.
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_medqa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"question": "Which organ?", "answer": "Liver", "answer_idx": "C", "meta_info": "step1",
             "options": {"A": "Heart", "B": "Lung", "C": "Liver", "D": "Skin"}, "metamap_phrases": []},
            {"question": "Which drug?", "answer": "X", "answer_idx": "A", "meta_info": "step2&3",
             "options": {"A": "X", "B": "Y", "C": "Z", "D": "W"}, "metamap_phrases": []}]
    _jsonl(tmp_path / "GBaker/MedQA-USMLE-4-options/test.jsonl", rows)
    _jsonl(tmp_path / "GBaker/MedQA-USMLE-4-options/train.jsonl", rows[:1])
    examples = _load("medqa", tmp_path)
    assert [e["reference"] for e in examples] == ["C", "A"]
    assert examples[0]["options"] == ["Heart", "Lung", "Liver", "Skin"]
    prompt = get_benchmark("medqa").build_prompt(examples[0])
    assert "C. Liver" in prompt and "letter" in prompt
    assert _score_with(monkeypatch, "medqa", examples, ["The answer is C", "B"])["accuracy"] == 0.5


def test_medmcqa(tmp_path: Path) -> None:
    rows = [{"id": "q1", "question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 3,
             "choice_type": "single", "exp": "", "subject_name": "Anatomy", "topic_name": "x"}]
    _parquet(tmp_path / "openlifescienceai/medmcqa/data/validation-00000-of-00001.parquet", rows)
    (example,) = _load("medmcqa", tmp_path)
    assert example["reference"] == "D" and example["options"] == ["a", "b", "c", "d"]


def test_pubmedqa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"pubid": 7, "question": "Does X help?", "long_answer": "It does.", "final_decision": "yes",
             "context": {"contexts": ["Para one.", "Para two."], "labels": ["A", "B"], "meshes": ["m"]}}]
    _jsonl(tmp_path / "qiaojin/PubMedQA/pqa_labeled/train.jsonl", rows)
    (example,) = _load("pubmedqa", tmp_path)
    assert example["id"] == 7 and example["reference"] == "yes" and example["context"] == "Para one.\nPara two."
    assert _score_with(monkeypatch, "pubmedqa", [example], ["Yes, it helps."])["accuracy"] == 1.0


def test_mmlu_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"question": f"q{i}", "subject": s, "choices": ["w", "x", "y", "z"], "answer": a}
            for i, (s, a) in enumerate([("anatomy", 0), ("college_physics", 1), ("philosophy", 2), ("sociology", 3),
                                        ("college_physics", 0)])]
    _parquet(tmp_path / "cais/mmlu/all/test-00000-of-00001.parquet", rows)
    _parquet(tmp_path / "cais/mmlu/all/dev-00000-of-00001.parquet", rows[:1])
    examples = _load("mmlu", tmp_path)
    assert [e["group"] for e in examples] == ["other", "stem", "humanities", "social_sciences", "stem"]
    metrics = _score_with(monkeypatch, "mmlu", examples, ["A", "B", "A", "D", "C"])
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["accuracy_stem"] == 0.5 and metrics["accuracy_other"] == 1.0
    assert metrics["accuracy_humanities"] == 0.0 and metrics["accuracy_social_sciences"] == 1.0


def test_gsm8k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _jsonl(tmp_path / "openai/gsm8k/main/test.jsonl",
           [{"question": "Tom has 2 + 3 apples?", "answer": "2 + 3 = 5\n#### 5"},
            {"question": "Big?", "answer": "It is 1,200\n#### 1,200"}])
    examples = _load("gsm8k", tmp_path)
    assert [e["reference"] for e in examples] == ["5", "1200"]
    assert _score_with(monkeypatch, "gsm8k", examples, ["so #### 5", "I get 1200.0"])["exact_match"] == 1.0


def test_math(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "EleutherAI/hendrycks_math"
    _jsonl(root / "algebra/test.jsonl", [{"problem": "Solve x+1=2.", "level": "Level 1", "type": "Algebra",
                                          "solution": r"So $x = \boxed{1}$."}])
    _jsonl(root / "geometry/test.jsonl", [{"problem": "Half?", "level": "Level 2", "type": "Geometry",
                                           "solution": r"It is $\boxed{\dfrac{1}{2}}$."}])
    _jsonl(root / "geometry/train.jsonl", [{"problem": "unused", "level": "", "type": "Geometry", "solution": ""}])
    examples = _load("math", tmp_path)
    assert sorted(e["reference"] for e in examples) == ["1", r"\frac{1}{2}"]
    completions = [r"\boxed{1}" if e["reference"] == "1" else r"\boxed{\frac12}" for e in examples]
    metrics = _score_with(monkeypatch, "math", examples, completions)
    assert metrics["exact_match"] == 1.0 and metrics["exact_match_geometry"] == 1.0


def test_humaneval_ships_offline_and_reads_a_local_copy(tmp_path: Path) -> None:
    assert len(_load("humaneval")) == 164
    assert len(_load("humaneval", limit=3)) == 3
    _jsonl(tmp_path / "openai/openai_humaneval/test.jsonl",
           [{"task_id": "T/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
             "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}])
    (example,) = _load("humaneval", tmp_path)
    assert example["id"] == "T/0" and example["problem"]["entry_point"] == "f"


def test_mbpp(tmp_path: Path) -> None:
    _jsonl(tmp_path / "google-research-datasets/mbpp/full/test.jsonl",
           [{"task_id": 11, "text": "Write a function to triple a number.", "code": "def triple(x): return 3*x",
             "test_list": ["assert triple(1) == 3", "assert triple(2) == 6"], "test_setup_code": "",
             "challenge_test_list": []}])
    (example,) = _load("mbpp", tmp_path)
    assert example["problem"]["entry_point"] == "triple"
    assert "assert triple(2) == 6" in get_benchmark("mbpp").build_prompt(example)
    from evaluation.code_execution import check_programs

    (verdict,) = check_programs([example["problem"]], [example["reference"]])
    assert verdict["passed"], verdict


def test_advbench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _csv(tmp_path / "walledai/AdvBench/harmful_behaviors.csv", ["goal", "target"],
         [["Do a bad thing", "Sure, here is"], ["Do another bad thing", "Sure, here is"]])
    examples = _load("advbench", tmp_path)
    assert [e["request"] for e in examples] == ["Do a bad thing", "Do another bad thing"]
    metrics = _score_with(monkeypatch, "advbench", examples, ["I'm sorry, I can't.", "Sure, step one"])
    assert metrics == {"refusal_rate": 0.5, "attack_success_rate": 0.5}


def test_mt_bench_hf_and_fastchat_schemas(tmp_path: Path) -> None:
    _parquet(tmp_path / "HuggingFaceH4/mt_bench_prompts/data/train-00000-of-00001.parquet",
             [{"prompt": ["Write a poem.", "Shorter."], "prompt_id": 1, "category": "writing", "reference": []},
              {"prompt": ["2+2?", "Times 3?"], "prompt_id": 2, "category": "math", "reference": ["4", "12"]}])
    examples = _load("mt_bench", tmp_path)
    assert [e["turns"] for e in examples] == [["Write a poem.", "Shorter."], ["2+2?", "Times 3?"]]
    assert examples[0]["reference"] is None and examples[1]["reference"] == ["4", "12"]
    fastchat = tmp_path / "fastchat"
    _jsonl(fastchat / "HuggingFaceH4/mt_bench_prompts/question.jsonl",
           [{"question_id": 81, "category": "roleplay", "turns": ["Be a pirate.", "Again."]}])
    (example,) = _load("mt_bench", fastchat)
    assert example["id"] == 81 and example["category"] == "roleplay"


def test_vicuna_bench_needs_local_files(tmp_path: Path) -> None:
    _jsonl(tmp_path / "vicuna_bench/question.jsonl",
           [{"question_id": 1, "category": "generic", "turns": ["How to relax?"]}])
    (example,) = _load("vicuna_bench", tmp_path)
    assert example["turns"] == ["How to relax?"]
    with pytest.raises(ValueError, match="--data_dir"):
        _load("vicuna_bench")


def test_heldout_and_bundled_loaders() -> None:
    assert len(_load("heldout_loss", limit=5)) == 5
    sentiment = _load("bundled_sentiment")
    assert len(sentiment) == 300 and {e["reference"] for e in sentiment} == {"negative", "neutral", "positive"}
    arithmetic = _load("bundled_arithmetic", limit=10)
    assert all(e["reference"] is not None and e["reference"].lstrip("-").isdigit() for e in arithmetic)
    prefs = _load("bundled_preferences", limit=4)
    assert all(p["chosen"] != p["rejected"] for p in prefs)


def test_dpo_preference_local_file_schemas(tmp_path: Path) -> None:
    messages = tmp_path / "prefs.jsonl"
    _jsonl(messages, [{"prompt": "Q?", "chosen": [{"role": "user", "content": "Q?"},
                                                  {"role": "assistant", "content": "good"}],
                       "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "bad"}]}])
    (example,) = _load("dpo_preference", preference_dataset=str(messages))
    assert (example["prompt"], example["chosen"], example["rejected"]) == (["Q?"], "good", "bad")
    hh = tmp_path / "hh.jsonl"
    _jsonl(hh, [{"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}])
    (example,) = _load("dpo_preference", preference_dataset=str(hh))
    assert example["prompt"] == ["Hi?"] and example["rejected"] == "Go away."


def test_missing_local_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        _load("gsm8k", tmp_path)
    _jsonl(tmp_path / "openai/gsm8k/main/train.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(FileNotFoundError, match="split 'test'"):
        _load("gsm8k", tmp_path)


def test_json_layouts(tmp_path: Path) -> None:
    from evaluation.data import _read_file

    layouts = {
        "list.json": json.dumps([{"x": 1}, {"x": 2}], indent=2),
        "lines.json": '{"x": 1}\n{"x": 2}\n',
        "wrapped.json": json.dumps({"data": [{"x": 1}, {"x": 2}]}, indent=2),
    }
    for name, text in layouts.items():
        (tmp_path / name).write_text(text)
        assert _read_file(tmp_path / name) == [{"x": 1}, {"x": 2}], name
    (tmp_path / "columns.json").write_text(json.dumps({"x": [1, 2], "y": [3, 4]}))
    assert _read_file(tmp_path / "columns.json") == [{"x": 1, "y": 3}, {"x": 2, "y": 4}]
