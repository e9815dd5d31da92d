"""The README's promises hold: its Python API example runs, and its quick start matches CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section_code(heading: str, language: str) -> str:
    """The first fenced code block of ``language`` after ``heading``."""
    start = README.index(heading)
    match = re.search(rf"```{language}\n(.*?)```", README[start:], re.S)
    assert match, f"no {language} block after {heading!r}"
    return match.group(1)


def test_python_api_example_runs_and_matches_hand_computation() -> None:
    namespace: dict[str, object] = {}
    exec(section_code("### Python API", "python"), namespace)
    # Delta = (30 * 1 + 10 * -1) / 40 = 0.5; m = 0.1 * 0.5; v = 0.99 * tau^2 + 0.01 * 0.25.
    m, v = 0.05, 0.99 * 1e-6 + 0.01 * 0.25
    expected = 1e-2 * m / (v**0.5 + 1e-3)
    value = namespace["new_global"]["layer.lora_A.weight"]  # type: ignore[index]
    assert torch.allclose(value, torch.full((2, 4), expected))


def test_ci_runs_the_readme_test_command() -> None:
    quick_start = section_code("## Quick start", "bash")
    test_command = [line for line in quick_start.splitlines() if "pytest" in line]
    assert len(test_command) == 1
    assert test_command[0].strip() in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "training_scripts" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_parses_and_validates(path: Path, tmp_path: Path) -> None:
    from federated_learning.checks import validate_flags
    from federated_learning.cli import parse_run
    from federated_learning.tasks import get_task

    task = "dpo" if path.name.startswith("dpo") else "sft"
    cfg = parse_run(task, ["--config", str(path), "--output_dir", str(tmp_path)])
    validate_flags(cfg)
    get_task(task).validate(cfg)


@pytest.mark.parametrize("script", ["run_sft.sh"])
def test_shipped_script_flags_parse(tmp_path: Path, script: str) -> None:
    """Run the script with `python` standing in for a parser-only check of its flags."""
    import os
    import subprocess
    import sys

    shim = tmp_path / "python"
    shim.write_text(
        f"#!/bin/sh\nshift\nexec {sys.executable} -c "
        "'import sys; from federated_learning.cli import parse_run; c = parse_run(\"sft\", sys.argv[1:]); "
        "print(c.script.dataset_name, c.fed.num_clients, c.script.load_in_8bit)' \"$@\"\n"
    )
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        ["bash", str(ROOT / "training_scripts" / script)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["vicgalle/alpaca-gpt4", "20", "True"]


def test_every_algorithm_the_readme_runs_is_registered() -> None:
    """The README's commands name only registered --fed_alg values (or local<K>), and the loops name them all."""
    from federated_learning import available_aggregators

    looped = [name for group in re.findall(r"for alg in ([a-z_ ]+); do", README) for name in group.split()]
    flagged = re.findall(r"--fed_alg ([a-z][a-z_0-9<>K]*)", README)
    valid = set(available_aggregators())
    assert looped and flagged
    assert [n for n in looped + flagged if n not in valid and not re.fullmatch(r"local(\d+|<K>)", n)] == []
    assert set(looped) == valid
