"""MT-Bench (Zheng et al., 2023): 80 two-turn questions in 8 categories, rated 1-10 by an LLM judge.

Hub: ``HuggingFaceH4/mt_bench_prompts``, split ``train`` (``data/train-*.parquet``; columns
``prompt``: the two turns, ``category``, ``reference``). FastChat's original
``fastchat/llm_judge/data/mt_bench/question.jsonl`` (``question_id``, ``category``, ``turns``,
``reference``) works too, at ``<data_dir>/mt_bench/question.jsonl``. Reported: turn 1, turn 2, their average
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
    original_folder = "mt_bench"
    local_layout = ("HuggingFaceH4/mt_bench_prompts/data/train-*.parquet: prompt[2], category, reference; or "
                    "FastChat's question.jsonl (turns[2]) at mt_bench/question.jsonl")
    metric_names = ("turn1", "turn2", "average")
