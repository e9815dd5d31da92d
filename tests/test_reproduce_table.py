"""training_scripts/reproduce_table.py: the table from run metrics, and a tiny end-to-end reproduction."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from training_scripts import table_report

SCRIPT = Path(__file__).resolve().parents[1] / "training_scripts" / "reproduce_table.py"
spec = importlib.util.spec_from_file_location("reproduce_table", SCRIPT)
reproduce_table = importlib.util.module_from_spec(spec)
sys.modules["reproduce_table"] = reproduce_table  # dataclasses look their module up while the file executes
spec.loader.exec_module(reproduce_table)


def fake_run(final: dict[str, float], base: dict[str, float] | None = None) -> dict:
    return {"final": final, "base": {"round": 0, **(base or {})}, "curves": {}, "partition": {"sizes": [1, 2]},
            "seconds": 1.0}


def test_table_rows_mean_of_local_clients_and_claim_check() -> None:
    sentiment = reproduce_table.TASKS["sentiment"]
    results = {"sentiment": {
        "local0": fake_run({"eval_accuracy": 0.40, "eval_macro_f1": 0.30},
                           {"eval_accuracy": 0.33, "eval_macro_f1": 0.2}),
        "local1": fake_run({"eval_accuracy": 0.60, "eval_macro_f1": 0.50}),
        "fedavg": fake_run({"eval_accuracy": 0.70, "eval_macro_f1": 0.65}),
        "fedadam": fake_run({"eval_accuracy": 0.45, "eval_macro_f1": 0.40}),
    }}
    methods = ["local0", "local1", "fedavg", "fedadam"]
    rows = dict(table_report.table_rows(results, [sentiment], methods))
    assert rows["Base model (no training)"] == [0.33, 0.2]
    assert rows["Local only: mean of 2 clients"] == pytest.approx([0.50, 0.40])
    assert rows["FedAvg"] == [0.70, 0.65]
    lines = table_report.claim_check(list(rows.items()), [sentiment])
    assert lines == ["- sentiment accuracy: 1 of 2 FL algorithms beat the mean local-only client (50.0): "
                     "all but FedAdam."]
    budget = reproduce_table.SMOKE
    text = table_report.render_markdown(results, [sentiment], methods, budget, "m", 1, 60.0)
    assert "| FedAvg | 70.0 | 65.0 |" in text
    assert "| Local only: mean of 2 clients | 50.0 | 40.0 |" in text


def test_final_eval_needs_the_last_round() -> None:
    records = [{"round": 0, "eval_accuracy": 0.1}, {"round": 1, "mean_train_loss": 2.0},
               {"round": 2, "eval_accuracy": 0.5}]
    assert reproduce_table.final_eval(records, 2) == {"eval_accuracy": 0.5}
    assert reproduce_table.final_eval(records[:2], 2) is None
    assert reproduce_table.eval_curve(records, "eval_accuracy") == [(0, 0.1), (2, 0.5)]


def test_unknown_method_is_refused() -> None:
    with pytest.raises(SystemExit, match="--methods"):
        reproduce_table.parse_args(["--methods", "fedsgd"])


@pytest.mark.slow
def test_smoke_reproduction_writes_table_and_plot(tmp_path: Path, tiny_model_dir: Path) -> None:
    argv = ["--smoke", "--output_dir", str(tmp_path), "--model_name_or_path", str(tiny_model_dir),
            "--tasks", "sentiment", "--methods", "local1,fedavg,scaffold", "--torch_threads", "1"]
    results_md = reproduce_table.main(argv)
    text = results_md.read_text()
    for label in ("Base model (no training)", "Local only: client 1", "Local only: mean of 1 client", "FedAvg",
                  "SCAFFOLD"):
        assert f"| {label} |" in text
    png = (tmp_path / "accuracy_vs_round.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    runs = saved["results"]["sentiment"]
    assert set(runs) == {"local1", "fedavg", "scaffold"}
    assert [r for r, _ in runs["fedavg"]["curves"]["eval_accuracy"]] == [0, 1, 2]  # --eval_every 1, 2 rounds
    assert all(run["lora_b_norm"] > 0 for run in runs.values()) and "| ‖B‖ | local 1 | FedAvg | SCAFFOLD |" in text
    # Every run was split alike and holds the same (shared) evaluation of the untrained model.
    run_dirs = [tmp_path / "runs" / "sentiment" / m for m in runs]
    partitions = [json.loads((d / "partition.json").read_text())["sizes"] for d in run_dirs]
    assert partitions[0] == partitions[1] == partitions[2] and len(partitions[0]) == 4
    base = [json.loads((d / "metrics.jsonl").read_text().splitlines()[0]) for d in run_dirs]
    for record in base:
        assert record.pop("eval_seconds") >= 0
    assert base[0]["round"] == 0 and base[0] == base[1] == base[2]
    assert base[0]["eval_loss"] > 0
    local = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert all(r["clients"] == [1] for r in local[1:])
    # A second invocation reuses the finished runs instead of training them again.
    stamps = [(d / "metrics.jsonl").stat().st_mtime_ns for d in run_dirs]
    reproduce_table.main(argv)
    assert [(d / "metrics.jsonl").stat().st_mtime_ns for d in run_dirs] == stamps


def test_client_lora_ranks_take_only_the_methods_that_support_them() -> None:
    args = reproduce_table.parse_args(["--methods", "fedavg,flora", "--client_lora_ranks", "2,4,8"])
    assert args.method_list == ["fedavg", "flora"] and reproduce_table.run_name("flora", "2,4,8") == "flora-ranks-2-4-8"
    with pytest.raises(SystemExit, match="--client_lora_ranks.*fedsa_lora"):
        reproduce_table.parse_args(["--methods", "fedavg,fedsa_lora", "--client_lora_ranks", "2,4,8"])
    assert reproduce_table.parse_args([]).method_list[-1] == "fedadam"  # the LoRA-aware ones only when asked


@pytest.mark.slow
def test_smoke_lora_table_with_mixed_ranks_reports_bytes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Mixed ranks: lower-rank clients send fewer bytes, so FLoRA's round uploads less than full-rank FedAvg's."""
    common = ["--smoke", "--model_name_or_path", str(tiny_model_dir), "--tasks", "arithmetic", "--torch_threads", "1"]
    full = reproduce_table.main([*common, "--output_dir", str(tmp_path / "full"), "--methods", "fedavg,ffa_lora"])
    mixed = reproduce_table.main([*common, "--output_dir", str(tmp_path / "mixed"), "--methods", "fedavg,flora",
                                  "--client_lora_ranks", "2,4,8"])
    assert "| FFA-LoRA |" in full.read_text() and "client LoRA ranks 2,4,8" in mixed.read_text()
    assert "Communication per round" in mixed.read_text()
    runs = json.loads((tmp_path / "full" / "results.json").read_text())["results"]["arithmetic"]
    ranked = json.loads((tmp_path / "mixed" / "results.json").read_text())["results"]["arithmetic"]
    up = {m: r["bytes_per_round"]["uploaded"] for m, r in runs.items()}
    assert up["ffa_lora"] < up["fedavg"]  # B only
    assert ranked["fedavg"]["bytes_per_round"]["uploaded"] < up["fedavg"]  # the same sampled clients, lower ranks
    assert (tmp_path / "mixed" / "runs" / "arithmetic" / "flora-ranks-2-4-8" / "metrics.jsonl").exists()
