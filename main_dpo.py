"""Federated Direct Preference Optimization (DPO) of a LoRA adapter.

    python main_dpo.py                      # offline demo: embedded SmolLM2-135M, bundled preference pairs
    python main_dpo.py --config run.yaml    # YAML defaults, CLI flags override
    python main_dpo.py --help               # every flag

The same round loop, sampler, partitions, aggregators and client hooks as ``main_sft.py``; the
task (data, DPOTrainer, reference policy, DPO defaults, evaluation) is ``federated_learning/tasks/dpo.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from federated_learning.cli import command_line, run_task


def main(argv: Sequence[str] | None = None) -> Path:
    """Run federated DPO as the flags say; return the run folder."""
    return run_task("dpo", argv)


if __name__ == "__main__":
    command_line("dpo")
