"""training_scripts/robust_table.py: the norm bound and Krum's choices from records, and a tiny end-to-end table."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "training_scripts" / "robust_table.py"
spec = importlib.util.spec_from_file_location("robust_table", SCRIPT)
table = importlib.util.module_from_spec(spec)
sys.modules["robust_table"] = table  # dataclasses look their module up while the file executes
spec.loader.exec_module(table)


def test_norm_bound_and_attacker_choices_from_records() -> None:
    records = [{"round": 0},
               {"round": 1, "client_metrics": {"0": {"update_norm": 4.0}, "1": {"update_norm": 1.0}},
                "aggregation": {"selected_clients": [0]}},
               {"round": 2, "client_metrics": {"0": {"update_norm": 2.0}, "1": {"rejected": "x"}},
                "aggregation": {"selected_clients": [1, 2]}}]
    assert table.honest_norm(records) == 2.0  # the median of 4, 1, 2
    assert table.attacker_selected(records) == (1, 2)  # client 0 chosen in round 1 of 2
    assert table.attacker_selected(records[:1]) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "bulyan"], "--methods: unknown"),
    (["--attacks", "scale,label_flip"], "--attacks: unknown"),
    (["--attack_scale", "0"], "--attack_scale must be positive"),
])
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        table.parse_args(argv)


def test_cells_pass_the_attack_and_the_bound() -> None:
    args = table.parse_args(["--smoke", "--attack_scale", "3"])
    clip = next(m for m in table.METHODS if m.name == "fedavg_clip")
    argv = table.cell_argv(clip, "sign_flip", args, "m", Path("runs"), 0.5)

    def last(flag: str) -> str:  # argparse keeps a repeated flag's last value
        return argv[len(argv) - 1 - argv[::-1].index(flag) + 1]

    assert last("--split_strategy") == "iid" and last("--output_dir") == str(Path("runs") / "sign_flip")
    assert last("--update_norm_bound") == "clip" and last("--max_update_norm") == "0.5"
    assert last("--attack") == "sign_flip" and last("--attack_scale") == "3.0" and last("--attack_clients") == "0"
    assert "--attack" not in table.cell_argv(table.METHODS[0], "none", args, "m", Path("runs"), None)


@pytest.mark.slow
def test_smoke_table(tmp_path: Path) -> None:
    results = table.main(["--smoke", "--output_dir", str(tmp_path), "--methods", "fedavg,krum,fedavg_clip",
                          "--attacks", "none,scale", "--torch_threads", "1"])
    text = results.read_text()
    for label in ("FedAvg", "Krum (f 1)", "FedAvg + norm bound (clip)"):
        assert f"| {label} |" in text
    assert "| FedMedian" not in text and "Krum (f 1) scale: " in text
    saved = json.loads((tmp_path / "results.json").read_text())
    clean = [json.loads(line) for line in (tmp_path / "runs" / "none" / "fedavg" / "metrics.jsonl").read_text()
             .splitlines()]
    norms = [m["update_norm"] for r in clean for m in r.get("client_metrics", {}).values()]
    assert saved["norm_bound"] == pytest.approx(statistics.median(norms)) and len(norms) == 5
    clipped = [json.loads(line) for line in (tmp_path / "runs" / "scale" / "fedavg_clip" / "metrics.jsonl")
               .read_text().splitlines()][-1]
    assert 0 in clipped["clipped_clients"]  # the attacker's 10x update is over the median honest norm
    assert set(saved["cells"]["krum"]) == {"none", "scale"}
