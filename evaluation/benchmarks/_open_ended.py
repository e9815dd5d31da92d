"""Shared shape of judge-scored open-ended benchmarks (MT-Bench, Vicuna bench)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.generation import generate_greedy, stop_strings_for
from evaluation.judge import parse_rating, second_turn_prompt, single_turn_prompt
from evaluation.metrics import mean
from evaluation.registry import Benchmark, BenchmarkResult, EvalSettings, Row
from utils.templates import get_template

REFERENCE_CATEGORIES = ("math", "reasoning", "coding")  # judged against a reference answer when one exists
JUDGE_FLAGS = "--judge_base_url and --judge_model"


def render_conversation(
    template_name: str, tokenizer: PreTrainedTokenizerBase, turns: Sequence[str], answers: Sequence[str]
) -> str:
    """The model input for the next answer after ``turns[:len(answers)]`` were answered with ``answers``."""
    conversation: list[str] = []
    for turn, answer in zip(turns, answers, strict=False):  # turns has one more item
        conversation += [turn, answer]
    conversation.append(turns[len(answers)])
    return get_template(template_name).conversation_prompt(conversation, tokenizer)


def open_ended_example(index: Any, row: Row) -> Row:
    """Normalise FastChat's question.jsonl (``turns``) or the HF copy (``prompt``) to one example."""
    turns = row.get("turns") or row.get("prompt")
    if not turns or not isinstance(turns, list | tuple):
        raise ValueError(f"question {index}: expected a list of turns in 'turns' (or 'prompt')")
    reference = [r for r in (row.get("reference") or []) if r]
    return {"id": row.get("question_id", row.get("prompt_id", index)), "category": row.get("category", "general"),
            "turns": list(turns), "reference": reference or None}


class JudgedBenchmark(Benchmark):
    """Answers generated greedily for ``num_turns`` turns, each rated 1-10 by the judge."""

    num_turns: ClassVar[int] = 1
    max_new_tokens: ClassVar[int] = 512

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [open_ended_example(i, r) for i, r in enumerate(rows)]

    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Row], settings: EvalSettings
    ) -> BenchmarkResult:
        if settings.judge is None:
            raise ValueError(f"benchmark {self.name} is scored by an LLM judge: pass {JUDGE_FLAGS}")
        answers: list[list[str]] = [[] for _ in examples]
        prompts: list[list[str]] = [[] for _ in examples]
        for turn in range(self.num_turns):
            active = [i for i, ex in enumerate(examples) if len(ex["turns"]) > turn]
            texts = [render_conversation(settings.template, tokenizer, examples[i]["turns"], answers[i])
                     for i in active]
            replies = generate_greedy(
                model, tokenizer, texts, max_new_tokens=settings.max_new_tokens or self.max_new_tokens,
                batch_size=settings.batch_size, bf16=settings.bf16, stop_strings=stop_strings_for(settings.template),
                show_progress=settings.show_progress,
            )
            for i, text, reply in zip(active, texts, replies, strict=True):
                prompts[i].append(text)
                answers[i].append(reply)
        records, judgments = [], []
        for ex, ex_prompts, ex_answers in zip(examples, prompts, answers, strict=True):
            ratings = []
            for turn in range(len(ex_answers)):
                ref = ex["reference"][turn] if ex["reference"] and ex["category"] in REFERENCE_CATEGORIES \
                    and turn < len(ex["reference"]) else None
                judge_prompt = (single_turn_prompt(ex["turns"][0], ex_answers[0], ref) if turn == 0
                                else second_turn_prompt(ex["turns"][:2], ex_answers[:2], ref))
                verdict = settings.judge.complete(judge_prompt)
                rating = parse_rating(verdict)
                ratings.append(rating)
                judgments.append({"id": ex["id"], "turn": turn + 1, "judge_model": settings.judge.model,
                                  "judge_prompt": judge_prompt, "verdict": verdict, "rating": rating})
            records.append({"id": ex["id"], "category": ex["category"], "prompt": ex_prompts, "prediction": ex_answers,
                            "reference": ex["reference"], "ratings": ratings,
                            "score": mean([r for r in ratings if r is not None])})
        return BenchmarkResult(self.summarize(records), records, {"judgments": judgments})

    def summarize(self, records: Sequence[Row]) -> dict[str, float]:
        """Mean rating per turn, overall and per category; failed verdicts are left out and counted."""
        metrics: dict[str, float] = {}
        all_ratings = [r for rec in records for r in rec["ratings"] if r is not None]
        for turn in range(self.num_turns):
            values = [rec["ratings"][turn] for rec in records if len(rec["ratings"]) > turn]
            metrics[f"turn{turn + 1}" if self.num_turns > 1 else "score"] = mean([v for v in values if v is not None])
        if self.num_turns > 1:
            metrics["average"] = mean(all_ratings)
        for category in sorted({rec["category"] for rec in records}):
            metrics[f"score_{category}"] = mean(
                [r for rec in records if rec["category"] == category for r in rec["ratings"] if r is not None])
        metrics["judge_failures"] = int(sum(r is None for rec in records for r in rec["ratings"]))
        return metrics
