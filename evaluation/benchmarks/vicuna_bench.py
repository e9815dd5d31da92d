"""Vicuna bench: 80 single-turn questions in 9 categories, rated 1-10 by an LLM judge.

No hub copy is canonical: put FastChat's ``fastchat/llm_judge/data/vicuna_bench/question.jsonl``
(``question_id``, ``category``, ``turns``) under ``<data_dir>/vicuna_bench/``. Reported: the mean
rating overall and per category.
"""

from __future__ import annotations

from evaluation.benchmarks._open_ended import JudgedBenchmark
from evaluation.data import load_rows
from evaluation.registry import EvalSettings, Row, register


@register
class VicunaBench(JudgedBenchmark):
    """Single-turn open-ended assistant questions."""

    name = "vicuna_bench"
    needs_judge = True
    num_turns = 1
    local_layout = "vicuna_bench/question.jsonl: question_id, category, turns[1]"
    metric_names = ("score",)

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        return load_rows(None, self.split, settings.data_dir, local_name="vicuna_bench")
