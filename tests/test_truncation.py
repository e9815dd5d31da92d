"""--seq_length never removes the response: the prompt gives way, a row that cannot fit is left out, and said so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

import main_sft
from evaluation.logprobs import tokenize_pair
from utils.constants import PROMPT_CUT, SOURCE_ROW
from utils.sft_data import load_sft_dataset
from utils.sft_tokenize import IGNORE_INDEX, tokenize_sft
from utils.templates import get_template
from utils.tiny_model import build_tiny_tokenizer
from utils.truncation import fit_prompt


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tiny_tokenizer()


def test_fit_prompt_keeps_the_end_and_a_leading_bos() -> None:
    assert fit_prompt([1, 2, 3], 2, 10, bos_token_id=None) == [1, 2, 3]  # fits: untouched
    assert fit_prompt([7, 2, 3, 4, 5], 3, 6, bos_token_id=None) == [3, 4, 5]  # the prompt's last 6 - 3 tokens
    assert fit_prompt([1, 2, 3, 4, 5], 3, 6, bos_token_id=1) == [1, 4, 5]  # BOS first, then the prompt's end
    assert fit_prompt([1, 2, 3], 5, 6, bos_token_id=1) is None  # only BOS would be left: no room
    assert fit_prompt([2, 3], 6, 6, bos_token_id=None) is None  # the completion alone fills seq_length


def test_sft_rows_keep_every_response_token_at_a_short_seq_length(tokenizer: Any) -> None:
    """The review's case: bundled/fin_sentiment at --seq_length 64 kept zero response tokens per row."""
    rows = load_sft_dataset("bundled/fin_sentiment", None, 50, "train", 2023)
    out = tokenize_sft(rows, tokenizer, "alpaca", 64)
    template = get_template("alpaca")
    assert SOURCE_ROW not in out.column_names and sum(out[PROMPT_CUT]) > 0
    for row, tokenized in zip(rows, out, strict=True):
        completion = tokenizer(template.completion(row["instruction"], row["response"], tokenizer),
                               add_special_tokens=False)["input_ids"]
        trained = [t for t in tokenized["labels"] if t != IGNORE_INDEX]
        assert trained == completion and len(tokenized["input_ids"]) <= 64
        prompt = tokenizer(template.prompt(row["instruction"], tokenizer))["input_ids"]
        kept = tokenized["input_ids"][: len(tokenized["input_ids"]) - len(completion)]
        assert kept == prompt[-len(kept):]  # the prompt's end (the response marker) survives


def test_sft_row_whose_response_cannot_fit_is_left_out(tokenizer: Any) -> None:
    rows = datasets.Dataset.from_list([{"instruction": "say it", "response": "the " * 100},
                                       {"instruction": "say it", "response": "of"}])
    out = tokenize_sft(rows, tokenizer, "alpaca", 32)
    assert out[SOURCE_ROW] == [1] and len(out) == 1


def test_evaluation_keeps_the_completion_too(tokenizer: Any) -> None:
    ids, prompt_length = tokenize_pair(tokenizer, "the a of " * 30, " and in", 16)
    completion = tokenizer(" and in", add_special_tokens=False)["input_ids"]
    assert len(ids) == 16 and ids[prompt_length:] == completion
    assert tokenize_pair(tokenizer, "the", " of" * 40, 16) == ([], 0)  # cannot fit: not scored


def test_short_seq_length_run_trains_and_records_the_counts(tmp_path: Path, tiny_model_dir: Path) -> None:
    argv = ["--model_name_or_path", str(tiny_model_dir), "--seq_length", "64", "--num_rounds", "1",
            "--dataset_sample", "60", "--eval_samples", "0", "--output_dir", str(tmp_path), "--run_name", "r",
            "--torch_threads", "1"]
    run_dir = main_sft.main(argv)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert record["mean_train_loss"] > 0.5  # was 0.0000: no response token survived the cut
    report = json.loads((run_dir / "partition.json").read_text())["tokenization"]
    assert report["seq_length"] == 64 and sum(c["prompt_cut"] for c in report["clients"]) > 0
    assert all(c["kept"] == c["rows"] and c["dropped"] == 0 for c in report["clients"])


@pytest.mark.parametrize(("long_rows", "message"), [
    (8, "none of the 8 rows fits --seq_length 32"),
    (4, "clients \\[[01]\\] have no trainable example: 4 of their rows need more than --seq_length 32"),
])
def test_client_left_without_a_trainable_row_names_seq_length(
    tmp_path: Path, tiny_model_dir: Path, long_rows: int, message: str
) -> None:
    """One client per category (natural split); the long rows' client (or every row) cannot be trained on."""
    data = tmp_path / "long.jsonl"
    rows = [{"instruction": f"q {i}", "response": "the " * 80 if i % 2 or long_rows == 8 else "of",
             "category": "long" if i % 2 else "short"} for i in range(8)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data), "--seq_length", "32",
            "--num_clients", "2", "--split_strategy", "natural", "--partition_column", "category",
            "--output_dir", str(tmp_path / "out"), "--torch_threads", "1"]
    with pytest.raises(ValueError, match=message):
        main_sft.main(argv)


def test_round_evaluation_that_cannot_score_anything_names_seq_length(tokenizer: Any) -> None:
    from evaluation.registry import EvalSettings
    from evaluation.round_eval import RoundEvaluation

    settings = EvalSettings(limit=3, seq_length=2, sft_dataset="bundled/fin_sentiment")
    with pytest.raises(ValueError, match="heldout_loss: none of its 3 held-out examples fits --seq_length 2"):
        RoundEvaluation.load([("heldout_loss", "eval_")], tokenizer, settings)
