"""Federated supervised fine-tuning (instruction tuning) of a LoRA adapter.

    python main_sft.py                      # offline demo: embedded SmolLM2-135M, bundled sentiment data
    python main_sft.py --config run.yaml    # YAML defaults, CLI flags override
    python main_sft.py --help               # every flag

The task itself is ``federated_learning/tasks/sft.py``; the round loop is every task's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from federated_learning.cli import command_line, run_task


def main(argv: Sequence[str] | None = None) -> Path:
    """Run federated SFT as the flags say; return the run folder."""
    return run_task("sft", argv)


if __name__ == "__main__":
    command_line("sft")
