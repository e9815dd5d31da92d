"""training_scripts/compression_table.py: the accuracy-per-MB report, end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training_scripts import compression_table

pytestmark = pytest.mark.slow


def test_mb_to_target_is_the_first_crossing() -> None:
    curve = [(0.0, 0.3), (1.5, 0.6), (3.0, 0.75), (4.5, 0.72)]
    assert compression_table.mb_to_target(curve, 0.7) == 3.0
    assert compression_table.mb_to_target(curve, 0.8) is None


def test_smoke_run_writes_the_table_the_plot_and_the_bytes_of_each_codec(tmp_path: Path) -> None:
    report = compression_table.main(["--smoke", "--output_dir", str(tmp_path), "--torch_threads", "1",
                                     "--variants", "none,int8,topk-10,ffa_lora", "--target", "0.01"])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert (tmp_path / "accuracy_vs_mb.png").stat().st_size > 0
    none, int8, topk, ffa = rows["none"], rows["int8"], rows["topk-10"], rows["ffa_lora"]
    # int8 sends 1 byte per value (+ a scale per row) both ways; top-k 8 bytes per kept value (10%) up, float32 down;
    # FFA-LoRA sends B only
    assert int8["mb_uploaded"] < none["mb_uploaded"] / 3 and int8["mb_downloaded"] < none["mb_downloaded"] / 3
    assert topk["mb_uploaded"] < none["mb_uploaded"] / 4 and topk["mb_downloaded"] == none["mb_downloaded"]
    assert ffa["mb_uploaded"] < none["mb_uploaded"] and ffa["mb_downloaded"] == none["mb_downloaded"]
    for row in rows.values():
        assert row["mb_total"] == pytest.approx(row["mb_uploaded"] + row["mb_downloaded"])
        assert row["curve"][0][0] == 0.0 and row["curve"][-1][0] == pytest.approx(row["mb_total"])
    text = report.read_text()
    assert f"| none: FedAvg, float32 up and down | {100 * none['final']:.1f} | {none['mb_uploaded']:.2f} |" in text


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(SystemExit, match="--variants"):
        compression_table.parse_args(["--variants", "zstd"])
