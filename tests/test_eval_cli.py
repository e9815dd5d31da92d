"""``python -m evaluation`` end to end on the tiny model: base vs an adapter, files and side-by-side table."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from evaluation.cli import expand_benchmarks, main


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with config.json and a checkpoint-1 adapter with non-zero LoRA weights."""
    run = tmp_path_factory.mktemp("run")
    (run / "config.json").write_text(json.dumps({"template": "alpaca", "fed_alg": "fedavg"}))
    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(run / "checkpoint-1")
    return run / "checkpoint-1"


@pytest.fixture()
def judge_url() -> Iterator[str]:
    """A local OpenAI-compatible judge that gives every answer [[6]]."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": "Reasonable. [[6]]"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_cli_base_vs_adapter(tiny_model_dir: Path, checkpoint: Path, judge_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "vicuna_bench").mkdir(parents=True)  # FastChat's fastchat/llm_judge/data/vicuna_bench/question.jsonl
    (data / "vicuna_bench/question.jsonl").write_text(
        json.dumps({"question_id": 1, "category": "generic", "turns": ["Name a colour."]}) + "\n")
    (data / "mt_bench").mkdir(parents=True)  # FastChat's fastchat/llm_judge/data/mt_bench/question.jsonl
    (data / "mt_bench/question.jsonl").write_text(
        json.dumps({"question_id": 81, "category": "math", "turns": ["2+2?", "Times 3?"], "reference": ["4", "12"]})
        + "\n")
    out = tmp_path / "out"
    main(["--model_name_or_path", str(tiny_model_dir), "--adapter", str(checkpoint),
          "--benchmarks", "bundled,heldout_loss,humaneval,vicuna_bench,mt_bench", "--limit", "2",
          "--output", str(out), "--max_new_tokens", "6", "--batch_size", "2", "--allow_code_execution",
          "--data_dir", str(data), "--judge_base_url", judge_url, "--judge_model", "local-judge", "--bf16", "false"])

    with open(out / "results.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["benchmark", "metric", "base", "checkpoint-1"]
    table = {(r[0], r[1]): r[2:] for r in rows[1:]}
    assert table[("bundled_preferences", "reward_margin")][0] == "0.0000"  # base is its own reference
    assert table[("bundled_preferences", "preference_accuracy")][0] == "0.5000"  # all ties
    assert table[("bundled_preferences", "reward_margin")][1] != "0.0000"  # the adapter moves log-probs
    assert table[("heldout_loss", "loss")][0] != table[("heldout_loss", "loss")][1]
    assert table[("vicuna_bench", "score")] == ["6.0000", "6.0000"]
    assert table[("mt_bench", "turn2")] == ["6.0000", "6.0000"]
    for key in [("bundled_sentiment", "accuracy"), ("bundled_sentiment", "macro_f1"),
                ("bundled_arithmetic", "exact_match"), ("humaneval", "pass@1")]:
        assert all(0.0 <= float(v) <= 1.0 for v in table[key])
    assert "| checkpoint-1 |" in (out / "results.md").read_text().splitlines()[0]

    sentiment = json.loads((out / "bundled_sentiment.json").read_text())
    assert sentiment["settings"]["template"] == "alpaca" and sentiment["settings"]["limit"] == 2
    for model in ("base", "checkpoint-1"):
        records = sentiment["models"][model]["records"]
        assert len(records) == 2 and {"prompt", "prediction", "answer", "reference", "score"} <= set(records[0])
        assert records[0]["prompt"].startswith("Below is an instruction")
    humaneval = json.loads((out / "humaneval.json").read_text())
    assert {r["id"] for r in humaneval["models"]["base"]["records"]} == \
        {r["id"] for r in humaneval["models"]["checkpoint-1"]["records"]}  # the same seeded sample
    judgments = (out / "mt_bench.checkpoint-1.judgments.jsonl").read_text().splitlines()
    assert len(judgments) == 2
    second = json.loads(judgments[1])
    assert second["turn"] == 2 and "12" in second["judge_prompt"] and second["rating"] == 6.0


def test_cli_validates_flags_before_loading(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = ["--model_name_or_path", str(tiny_model_dir), "--output", str(tmp_path)]
    with pytest.raises(ValueError, match="--allow_code_execution"):
        main([*base, "--benchmarks", "humaneval"])
    with pytest.raises(ValueError, match="--judge_base_url"):
        main([*base, "--benchmarks", "mt_bench"])
    with pytest.raises(ValueError, match="adapter_config.json"):
        main([*base, "--benchmarks", "bundled_sentiment", "--adapter", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown benchmark"):
        main([*base, "--benchmarks", "fpb,nope"])
    assert expand_benchmarks("finance,fpb,bundled_sentiment") == ["fpb", "fiqa_sa", "tfns", "nwgi",
                                                                  "bundled_sentiment"]
    assert "humaneval" in expand_benchmarks("offline") and "mt_bench" not in expand_benchmarks("offline")


def test_adapter_columns_and_template_inference(tmp_path: Path) -> None:
    from transformers import HfArgumentParser

    from evaluation.cli import EvalArguments, adapter_labels, infer_template

    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(
        args=["--benchmarks", "fpb", "--adapter", "a/run1/checkpoint-5", "b/run2/checkpoint-5"])
    assert args.adapter == ["a/run1/checkpoint-5", "b/run2/checkpoint-5"]
    assert adapter_labels(args.adapter) == ["run1/checkpoint-5", "run2/checkpoint-5"]
    assert adapter_labels(["x/checkpoint-1", "x/checkpoint-2"]) == ["checkpoint-1", "checkpoint-2"]
    for run, template in (("r1", "vicuna"), ("r2", "vicuna"), ("r3", "chat")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "config.json").write_text(json.dumps({"template": template}))
    assert infer_template([str(tmp_path / "r1/checkpoint-1"), str(tmp_path / "r2/checkpoint-1")]) == "vicuna"
    assert infer_template([]) == "alpaca"
    with pytest.raises(ValueError, match="--template"):
        infer_template([str(tmp_path / "r1/checkpoint-1"), str(tmp_path / "r3/checkpoint-1")])


def test_cli_scores_a_dpo_checkpoint_against_its_saved_reference(
    tiny_model_dir: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """A checkpoint of a --ref_adapter DPO run carries its reference in ref/: dpo_preference uses it."""
    import shutil

    with_ref = tmp_path / "run" / "checkpoint-2"
    shutil.copytree(checkpoint, with_ref)
    shutil.copytree(checkpoint, with_ref / "ref")  # policy == reference: every margin is 0
    out = tmp_path / "out"
    main(["--model_name_or_path", str(tiny_model_dir), "--adapter", str(checkpoint), str(with_ref),
          "--benchmarks", "bundled_preferences", "--limit", "4", "--output", str(out), "--bf16", "false"])
    with open(out / "results.csv") as handle:
        table = {(r[0], r[1]): r[2:] for r in list(csv.reader(handle))[1:]}
    base, plain, referenced = table[("bundled_preferences", "reward_margin")]
    assert base == "0.0000" and plain != "0.0000" and referenced == "0.0000"
    assert table[("bundled_preferences", "preference_accuracy")][2] == "0.5000"
