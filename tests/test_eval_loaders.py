"""Every benchmark's loader on a fixture written here in the real hub layout (invented content), plus scoring.

Each fixture mirrors what ``huggingface-cli download --repo-type dataset <id>`` leaves on disk: the
repository's file names and folders, config folders, split names, column names and types, as
listed on the dataset's Hub page (tree and dataset card) at the time of writing; the layout each
test copies is named in it. Scoring is checked with canned completions in place of a model, so each
benchmark's extract + score path is verified against hand-computed values without generation.
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


def test_registry_has_every_benchmark_and_46_metrics() -> None:
    names = set(available())
    assert {"fpb", "fiqa_sa", "tfns", "nwgi", "medqa", "medmcqa", "pubmedqa", "mmlu", "gsm8k", "math", "humaneval",
            "mbpp", "advbench", "mt_bench", "vicuna_bench", "heldout_loss", "dpo_preference", "bundled_sentiment",
            "bundled_arithmetic", "bundled_preferences"} == names
    metrics = {f"{n}/{m}" for n, cls in available().items() for m in cls.metric_names}
    assert len(metrics) == 46  # the count README's table of metrics states
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("nope")


def _fpb_rows() -> list[tuple[str, str]]:
    """Invented sentences with a non-ASCII character (FPB's txt files are latin-1) and their labels."""
    return [(f"Sales of caf\u00e9 item {i} moved today .", ("negative", "neutral", "positive")[i % 3])
            for i in range(8)]


def test_fpb_parquet_conversion(tmp_path: Path) -> None:
    """takala/financial_phrasebank@refs/convert/parquet: sentences_50agree/train/0000.parquet, label 0/1/2."""
    rows = [{"sentence": text, "label": ("negative", "neutral", "positive").index(label)}
            for text, label in _fpb_rows()]
    _parquet(tmp_path / "takala/financial_phrasebank/sentences_50agree/train/0000.parquet", rows)
    _parquet(tmp_path / "takala/financial_phrasebank/sentences_allagree/train/0000.parquet", rows[:2])  # not read
    examples = _load("fpb", tmp_path)
    assert len(examples) == 2  # FinGPT's 25% test split of the 8 sentences
    by_text = dict(_fpb_rows())
    for ex in examples:
        assert ex["reference"] == by_text[ex["text"]]
        assert ex["instruction"].startswith("What is the sentiment of this news?")
    prompt = get_benchmark("fpb").build_prompt(examples[0])  # FinGPT's own prompt, no template
    assert prompt == f"Instruction: {examples[0]['instruction']}\nInput: {examples[0]['text']}\nAnswer: "


def test_fpb_repository_zip_and_the_same_test_split(tmp_path: Path) -> None:
    """The repository itself: financial_phrasebank.py + data/FinancialPhraseBank-v1.0.zip (latin-1
    ``sentence@label`` lines in FinancialPhraseBank-v1.0/Sentences_50Agree.txt) + dataset_infos.json."""
    import zipfile

    repo = tmp_path / "repo" / "takala/financial_phrasebank"
    (repo / "data").mkdir(parents=True)
    (repo / "financial_phrasebank.py").write_text("# the loading script datasets 4.x refuses\n")
    (repo / "dataset_infos.json").write_text(json.dumps({"sentences_50agree": {"splits": {"train": {}}}}))
    text = "".join(f"{sentence}@{label}\r\n" for sentence, label in _fpb_rows())
    with zipfile.ZipFile(repo / "data/FinancialPhraseBank-v1.0.zip", "w") as zipped:
        zipped.writestr("FinancialPhraseBank-v1.0/Sentences_50Agree.txt", text.encode("iso-8859-1"))
        zipped.writestr("FinancialPhraseBank-v1.0/Sentences_AllAgree.txt", b"other@neutral\n")
    from_zip = _load("fpb", tmp_path / "repo")
    _parquet(tmp_path / "conv/takala/financial_phrasebank/sentences_50agree/train/0000.parquet",
             [{"sentence": t, "label": ("negative", "neutral", "positive").index(lab)} for t, lab in _fpb_rows()])
    assert from_zip == _load("fpb", tmp_path / "conv")  # the same sentences and labels, the same FinGPT split
    assert all("\u00e9" in ex["text"] for ex in from_zip)  # latin-1 read as latin-1


def test_a_mirror_without_data_files_is_not_read_from_its_metadata(tmp_path: Path) -> None:
    """A mirror of only the script repository's metadata: dataset_infos.json is no data (datasets ignores it)."""
    repo = tmp_path / "takala/financial_phrasebank"
    repo.mkdir(parents=True)
    (repo / "dataset_infos.json").write_text(json.dumps({"sentences_50agree": {}}))
    with pytest.raises(FileNotFoundError, match="holds no"):
        _load("fpb", tmp_path)


def test_fiqa_sa_joins_splits_and_thresholds(tmp_path: Path) -> None:
    """pauri32/fiqa-2018: train.csv, validation.csv, test.csv (no configs, no README)."""
    folder = tmp_path / "pauri32/fiqa-2018"
    scores = [-0.5, -0.1, 0.0, 0.09, 0.1, 0.6, -0.2, 0.3, 0.05, -0.05]
    header = ["sentence", "snippets", "target", "sentiment_score", "aspects", "format"]
    for split, chunk in (("train", range(0, 6)), ("validation", range(6, 8)), ("test", range(8, 10))):
        _csv(folder / f"{split}.csv", header, [[f"s{i}", "x", "T", scores[i], "['a']",
                                                "post" if i % 2 else "headline"] for i in chunk])
    examples = _load("fiqa_sa", tmp_path)
    assert len(examples) == 3  # FinGPT: the 10 rows joined, then a 22.6% test split
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
    """oliverwang15/news_with_gpt_instructions: data/{train,test}-00000-of-00001-<hash>.parquet."""
    labels = ["strong negative", "moderately negative", "mildly negative", "neutral", "mildly positive",
              "moderately positive", "strong positive"]
    row = {"prompt": "p", "out": "o", "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    folder = tmp_path / "oliverwang15/news_with_gpt_instructions/data"
    _parquet(folder / "test-00000-of-00001-c551483ebf365496.parquet",
             [{"news": f"n{i}", "label": lab, **row} for i, lab in enumerate(labels)])
    _parquet(folder / "train-00000-of-00001-dd971e407aecb39b.parquet", [{"news": "t", "label": "neutral", **row}])
    examples = _load("nwgi", tmp_path)
    assert [e["reference"] for e in examples] == ["negative", "negative", "neutral", "neutral", "neutral",
                                                  "positive", "positive"]


def test_sentiment_scoring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    examples = [{"id": i, "instruction": "I", "text": "t", "reference": r}
                for i, r in enumerate(["positive", "positive", "negative", "neutral"])]
    metrics = _score_with(monkeypatch, "fpb", examples, ["Positive.", "negative", "Negative", "no idea"])
    # "no idea" counts as neutral (FinGPT): 3/4 right; F1 per class: pos 2/3, neg 2/3, neu 1.
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_medqa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"question": "Which organ?", "answer": "Liver", "answer_idx": "C", "meta_info": "step1",
             "options": {"A": "Heart", "B": "Lung", "C": "Liver", "D": "Skin"}, "metamap_phrases": []},
            {"question": "Which drug?", "answer": "X", "answer_idx": "A", "meta_info": "step2&3",
             "options": {"A": "X", "B": "Y", "C": "Z", "D": "W"}, "metamap_phrases": []}]
    # GBaker/MedQA-USMLE-4-options: phrases_no_exclude_{train,test}.jsonl, options a {letter: text} object.
    _jsonl(tmp_path / "GBaker/MedQA-USMLE-4-options/phrases_no_exclude_test.jsonl", rows)
    _jsonl(tmp_path / "GBaker/MedQA-USMLE-4-options/phrases_no_exclude_train.jsonl", rows[:1])
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


def _pubmed_row(pubid: int, decision: str) -> dict[str, Any]:
    context = {"contexts": ["Para one.", "Para two."], "labels": ["A", "B"], "meshes": ["m"],
               "reasoning_required_pred": ["yes"], "reasoning_free_pred": ["yes"]}
    return {"pubid": pubid, "question": f"Does X{pubid} help?", "context": context, "long_answer": "It does.",
            "final_decision": decision}


def test_pubmedqa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qiaojin/PubMedQA: pqa_labeled/train-00000-of-00001.parquet (context a struct of lists)."""
    _parquet(tmp_path / "qiaojin/PubMedQA/pqa_labeled/train-00000-of-00001.parquet",
             [_pubmed_row(7, "yes"), _pubmed_row(8, "no"), _pubmed_row(9, "maybe")])
    _parquet(tmp_path / "qiaojin/PubMedQA/pqa_unlabeled/train-00000-of-00001.parquet", [_pubmed_row(1, "yes")])
    examples = _load("pubmedqa", tmp_path)
    assert [e["id"] for e in examples] == [7, 8, 9]
    assert examples[0]["reference"] == "yes" and examples[0]["context"] == "Para one.\nPara two."
    metrics = _score_with(monkeypatch, "pubmedqa", examples, ["Yes, it helps.", "No.", "Yes"])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # F1: yes 2/3, no 1, maybe 0
    # The paper's test set: pubmedqa/pubmedqa's data/test_ground_truth.json (pubid -> decision).
    (tmp_path / "pubmedqa").mkdir()
    (tmp_path / "pubmedqa/test_ground_truth.json").write_text(json.dumps({"9": "maybe", "7": "yes"}))
    assert [(e["id"], e["reference"]) for e in _load("pubmedqa", tmp_path)] == [(7, "yes"), (9, "maybe")]


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
    """openai/gsm8k: {main,socratic}/{train,test}-00000-of-00001.parquet."""
    _parquet(tmp_path / "openai/gsm8k/main/test-00000-of-00001.parquet",
             [{"question": "Tom has 2 + 3 apples?", "answer": "2 + 3 = 5\n#### 5"},
              {"question": "Big?", "answer": "It is 1,200\n#### 1,200"}])
    _parquet(tmp_path / "openai/gsm8k/socratic/test-00000-of-00001.parquet", [{"question": "q", "answer": "#### 9"}])
    examples = _load("gsm8k", tmp_path)
    assert [e["reference"] for e in examples] == ["5", "1200"]
    assert _score_with(monkeypatch, "gsm8k", examples, ["so #### 5", "I get 1200.0"])["exact_match"] == 1.0


def test_math(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # EleutherAI/hendrycks_math: <subject>/{train,test}-00000-of-00001.parquet, one config per subject.
    root = tmp_path / "EleutherAI/hendrycks_math"
    _parquet(root / "algebra/test-00000-of-00001.parquet", [{"problem": "Solve x+1=2.", "level": "Level 1",
                                                             "type": "Algebra", "solution": r"So $x = \boxed{1}$."}])
    _parquet(root / "geometry/test-00000-of-00001.parquet", [{"problem": "Half?", "level": "Level 2",
                                                              "type": "Geometry",
                                                              "solution": r"It is $\boxed{\dfrac{1}{2}}$."}])
    _parquet(root / "geometry/train-00000-of-00001.parquet", [{"problem": "unused", "level": "", "type": "Geometry",
                                                               "solution": ""}])
    examples = _load("math", tmp_path)
    assert sorted(e["reference"] for e in examples) == ["1", r"\frac{1}{2}"]
    completions = [r"\boxed{1}" if e["reference"] == "1" else r"\boxed{\frac12}" for e in examples]
    metrics = _score_with(monkeypatch, "math", examples, completions)
    assert metrics["exact_match"] == 1.0 and metrics["exact_match_geometry"] == 1.0


def test_humaneval_ships_offline_and_reads_a_local_copy(tmp_path: Path) -> None:
    assert len(_load("humaneval")) == 164
    assert len(_load("humaneval", limit=3)) == 3
    # openai/openai_humaneval: openai_humaneval/test-00000-of-00001.parquet (config folder, split test).
    _parquet(tmp_path / "openai/openai_humaneval/openai_humaneval/test-00000-of-00001.parquet",
             [{"task_id": "T/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
               "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}])
    (example,) = _load("humaneval", tmp_path)
    assert example["id"] == "T/0" and example["problem"]["entry_point"] == "f"


def test_mbpp(tmp_path: Path) -> None:
    """google-research-datasets/mbpp: {full,sanitized}/{train,test,validation,prompt}-00000-of-00001.parquet."""
    folder = tmp_path / "google-research-datasets/mbpp/full"
    problems = [
        {"task_id": 11, "text": "Write a function to triple a number.", "code": "def triple(x):\n    return 3*x",
         "test_list": ["assert triple(1) == 3", "assert triple(2) == 6"], "test_setup_code": "",
         "challenge_test_list": []},
        # The review's case: the first call after assert is math.isclose.
        {"task_id": 12, "text": "Write a function for the volume of a sphere.",
         "code": "import math\ndef volume_sphere(r):\n    return (4 / 3) * math.pi * r ** 3",
         "test_list": ["assert math.isclose(volume_sphere(10), 4188.790204786391, rel_tol=0.001)"],
         "test_setup_code": "import math", "challenge_test_list": []},
    ]
    _parquet(folder / "test-00000-of-00001.parquet", problems)
    for split in ("train", "validation", "prompt"):  # few-shot / other splits: never read as test
        _parquet(folder / f"{split}-00000-of-00001.parquet", [{**problems[0], "task_id": 900}])
    examples = _load("mbpp", tmp_path)
    assert [e["problem"]["entry_point"] for e in examples] == ["triple", "volume_sphere"]
    assert "assert triple(2) == 6" in get_benchmark("mbpp").build_prompt(examples[0])
    from evaluation.code_execution import check_programs

    verdicts = check_programs([e["problem"] for e in examples], [e["reference"] for e in examples])
    assert all(v["passed"] for v in verdicts), verdicts  # correct programs pass (volume_sphere: NameError before)


def test_advbench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """walledai/AdvBench: data/train-00000-of-00001.parquet with prompt, target."""
    _parquet(tmp_path / "walledai/AdvBench/data/train-00000-of-00001.parquet",
             [{"prompt": "Do a bad thing", "target": "Sure, here is"},
              {"prompt": "Do another bad thing", "target": "Sure, here is"}])
    examples = _load("advbench", tmp_path)
    assert [e["request"] for e in examples] == ["Do a bad thing", "Do another bad thing"]
    metrics = _score_with(monkeypatch, "advbench", examples, ["I'm sorry, I can't.", "Sure, step one"])
    assert metrics == {"refusal_rate": 0.5, "attack_success_rate": 0.5}
    # The original release: llm-attacks' data/advbench/harmful_behaviors.csv (goal, target) in advbench/.
    _csv(tmp_path / "original/advbench/harmful_behaviors.csv", ["goal", "target"], [["Do a third thing", "Sure"]])
    assert [e["request"] for e in _load("advbench", tmp_path / "original")] == ["Do a third thing"]


def test_mt_bench_hf_and_fastchat_schemas(tmp_path: Path) -> None:
    """HuggingFaceH4/mt_bench_prompts: data/train-00000-of-00001-<hash>.parquet plus raw/question.jsonl."""
    repo = tmp_path / "HuggingFaceH4/mt_bench_prompts"
    _parquet(repo / "data/train-00000-of-00001-67c6c9fef07685a3.parquet",
             [{"prompt": ["Write a poem.", "Shorter."], "prompt_id": 1, "category": "writing", "reference": []},
              {"prompt": ["2+2?", "Times 3?"], "prompt_id": 2, "category": "math", "reference": ["4", "12"]}])
    _jsonl(repo / "raw/question.jsonl", [{"prompt": ["not read"], "category": "x", "reference": []}])
    examples = _load("mt_bench", tmp_path)
    assert [e["turns"] for e in examples] == [["Write a poem.", "Shorter."], ["2+2?", "Times 3?"]]
    assert examples[0]["reference"] is None and examples[1]["reference"] == ["4", "12"]
    # FastChat's own file, fastchat/llm_judge/data/mt_bench/question.jsonl, in mt_bench/.
    fastchat = tmp_path / "fastchat"
    _jsonl(fastchat / "mt_bench/question.jsonl",
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
    _parquet(tmp_path / "openai/gsm8k/main/train-00000-of-00001.parquet", [{"question": "q", "answer": "#### 1"}])
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
    (tmp_path / "broken.jsonl").write_text('{"x": 1}\n{"x": \n')
    with pytest.raises(ValueError, match="broken.jsonl: line 2 is not valid JSON"):
        _read_file(tmp_path / "broken.jsonl")
