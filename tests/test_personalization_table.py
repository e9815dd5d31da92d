"""training_scripts/personalization_table.py: rows from per-client records, and a tiny end-to-end table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "training_scripts" / "personalization_table.py"
spec = importlib.util.spec_from_file_location("personalization_table", SCRIPT)
table = importlib.util.module_from_spec(spec)
sys.modules["personalization_table"] = table  # dataclasses look their module up while the file executes
spec.loader.exec_module(table)

METRIC = "eval_preference_accuracy"


def _record() -> dict:
    def client(score: float, group: str) -> dict[str, float]:
        return {METRIC: score, f"{METRIC}/group={group}": score}

    return {"per_client": {"0": client(1.0, "concise"), "1": client(0.5, "concise"), "2": client(0.0, "detailed")},
            "personal": {"0": client(1.0, "concise"), "1": client(1.0, "concise"), "2": client(0.8, "detailed")}}


def test_group_and_client_summaries_are_the_means_over_each_groups_users() -> None:
    row = table.Row("FedAvg: global adapter", "fedavg", "per_client")
    summary = table.summarise(_record(), row, METRIC)
    assert summary["groups"] == {"concise": 0.75, "detailed": 0.0}
    assert summary["mean"] == pytest.approx(0.5) and summary["worst"] == 0.0 and summary["best"] == 1.0
    personal = table.summarise(_record(), table.Row("Ditto", "ditto", "personal"), METRIC)
    assert personal["groups"] == {"concise": 1.0, "detailed": 0.8}
    args = table.parse_args(["--table", "preferences"])
    text = table.render("preferences", {"FedAvg: global adapter": summary, "Ditto": personal}, args, "m",
                        {"fedavg": 1.0, "ditto": None})
    assert "| FedAvg: global adapter | 75.0 | 0.0 | 0.0 | 50.0 | 0.0 |" in text
    assert "| Ditto | 100.0 | 80.0 | 80.0 | 93.3 | 80.0 |" in text and "ditto reused" in text


def test_unknown_method_is_refused() -> None:
    with pytest.raises(SystemExit, match="--methods: unknown"):
        table.parse_args(["--table", "preferences", "--methods", "fedsa_lora"])


@pytest.mark.slow
def test_smoke_table_writes_rows_and_plot(tmp_path: Path) -> None:
    results = table.main(["--table", "sentiment", "--smoke", "--output_dir", str(tmp_path), "--methods",
                          "fedavg,ifca", "--torch_threads", "1", "--eval_per_client", "6"])
    text = results.read_text()
    for label in ("FedAvg: global adapter", "FedAvg + local fine-tuning", "IFCA: global (the majority cluster)",
                  "IFCA: each client's cluster"):
        assert f"| {label} |" in text
    assert "| Ditto" not in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]["FedAvg: global adapter"]["clients"]) == 4  # the smoke budget's clients
    assert (tmp_path / "per_client.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
