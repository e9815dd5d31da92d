"""The benchmark scripts still run against the current round loop (their figures are measured, not tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_round_breaks_a_tiny_run_into_its_pieces(tiny_model_dir: Path) -> None:
    """bench_round wraps RoundLoop._one_round and the client pieces; a change of their signatures must show here."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_round.py"), "--num_rounds", "2", "--model_name_or_path",
         str(tiny_model_dir), "--max_steps", "1", "--batch_size", "2", "--seq_length", "64", "--dataset_sample", "40"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 2 |", "| all |"))]
    assert len(rows) == 3, out
    assert "outside local steps, rounds 2..2" in out
