"""The command line as a user meets it: one-line errors with exit status 2, suggestions, a quiet log off a terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["--no_such_flag", "1"], "main_sft.py: error: unrecognized argument(s) no_such_flag; every flag: --help"),
    (["--num_roundz", "3"], "main_sft.py: error: unrecognized argument(s) num_roundz (did you mean num_rounds?)"),
    (["--num_rounds", "x"], "main_sft.py: error: argument --num_rounds/--num-rounds: invalid int value: 'x'"),
    (["--learning_rate", "-1"], "main_sft.py: error: --learning_rate must be positive, got -1.0"),
    (["--fed_alg", "fedavgg"], "main_sft.py: error: --fed_alg 'fedavgg' is unknown. Valid: ditto, fedadagrad"),
    (["--config", "missing.yaml"], "main_sft.py: error: --config: [Errno 2] No such file or directory"),
])
def test_bad_flags_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run("main_sft.py", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_unknown_yaml_key_names_the_closest_flag(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("num_roundz: 3\nfed_alg: fedprox\n")
    result = run("main_dpo.py", "--config", str(tmp_path / "run.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == ("main_dpo.py: error: --config: unknown key(s) num_roundz (did you mean "
                                     "num_rounds?); every flag: --help")


def test_help_lists_every_flag() -> None:
    result = run("main_sft.py", "--help")
    assert result.returncode == 0 and "--client_weighting" in result.stdout and "--fed_alg" in result.stdout
    assert "--dataset_split" in run("main_dpo.py", "--help").stdout  # the DPO task's own flag


def test_malformed_jsonl_names_the_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"instruction": "a", "response": "b"}) + '\n{"instruction": "c", "response": \n')
    result = run("main_sft.py", "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"main_sft.py: error: {data}: line 2 is not valid JSON (Expecting value at column 34); "
                      "fix or remove it"]


def test_log_off_a_terminal_has_no_progress_bar_redraws(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = run("main_sft.py", "--model_name_or_path", str(tiny_model_dir), "--num_rounds", "2", "--eval_samples",
                 "2", "--output_dir", str(tmp_path), "--torch_threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "round 2/2" in result.stderr
    assert "\r" not in result.stderr and "\x1b[" not in result.stderr
