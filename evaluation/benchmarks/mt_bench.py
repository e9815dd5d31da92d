"""MT-Bench (Zheng et al., 2023): 80 two-turn questions in 8 categories, rated 1-10 by an LLM judge.

Hub: ``HuggingFaceH4/mt_bench_prompts``, split ``train`` (columns ``prompt``: the two turns,
``category``, ``reference``); FastChat's ``question.jsonl`` (``question_id``, ``category``,
``turns``, ``reference``) under ``--data_dir`` works too. Reported: turn 1, turn 2, their average
and the average per category. Answers are greedy (FastChat samples some categories).
"""

from __future__ import annotations

from evaluation.benchmarks._open_ended import JudgedBenchmark
from evaluation.registry import register


@register
class MTBench(JudgedBenchmark):
    """Multi-turn chat quality."""

    name = "mt_bench"
    hub_id = "HuggingFaceH4/mt_bench_prompts"
    split = "train"
    needs_judge = True
    num_turns = 2
    local_layout = ("HuggingFaceH4/mt_bench_prompts/*.{parquet,jsonl}: prompt[2] (or turns[2]), category, "
                    "reference; e.g. FastChat's data/mt_bench/question.jsonl")
    metric_names = ("turn1", "turn2", "average")
