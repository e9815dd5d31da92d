"""Zero-shot scores of a model on the bundled test splits: how much headroom fine-tuning has.

Greedy generation with the alpaca template (as OpenFedLLM formats fin_sentiment: instruction + " " +
input) for ``bundled/fin_sentiment`` (accuracy, macro-F1, predicted-label counts) and
``bundled/arithmetic`` (exact match of the final number); for ``bundled/preferences`` the share of
pairs whose chosen completion gets a higher summed log-probability than the rejected one.

    .venv/bin/python benchmarks/zero_shot_bundled.py --num_examples 100
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.answers import SENTIMENT_LABELS, extract_final_number, extract_sentiment  # noqa: E402
from evaluation.generation import generate_greedy, stop_strings_for  # noqa: E402
from evaluation.logprobs import completion_logprobs  # noqa: E402
from evaluation.metrics import classification_scores, exact_match  # noqa: E402
from utils.bundled import load_bundled  # noqa: E402
from utils.model import load_model_and_tokenizer  # noqa: E402
from utils.templates import get_template  # noqa: E402

TASKS = ("fin_sentiment", "arithmetic", "preferences")


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default="embedded", help="'embedded', a hub id, folder or .gguf")
    parser.add_argument("--template", default="alpaca")
    parser.add_argument("--num_examples", type=int, default=100, help="first N rows of each test split")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {TASKS}")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the machine is shared)")
    parser.add_argument("--show_examples", type=int, default=3, help="print this many generations per task")
    return parser.parse_args()


def sentiment(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace) -> None:
    """Accuracy / macro-F1 of the generated label."""
    rows = load_bundled("bundled/fin_sentiment", "test").select(range(args.num_examples))
    template = get_template(args.template)
    prompts = [template.prompt(f"{r['instruction']} {r['input']}", tokenizer) for r in rows]
    outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=8, batch_size=args.batch_size,
                              stop_strings=stop_strings_for(args.template))
    predicted = [extract_sentiment(text) for text in outputs]
    scores = classification_scores(predicted, rows["label"], labels=SENTIMENT_LABELS)
    print(f"fin_sentiment  n={len(rows)}  accuracy={scores['accuracy']:.3f}  macro_f1={scores['macro_f1']:.3f}")
    print(f"  gold: {dict(collections.Counter(rows['label']))}")
    print(f"  predicted: {dict(collections.Counter(str(p) for p in predicted))}")
    for row, text in list(zip(rows, outputs, strict=True))[: args.show_examples]:
        print(f"  [{row['label']}] {row['input']!r} -> {text!r}")


def arithmetic(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace) -> None:
    """Exact match of the final number, overall and per category."""
    rows = load_bundled("bundled/arithmetic", "test").select(range(args.num_examples))
    template = get_template(args.template)
    prompts = [template.prompt(r["question"], tokenizer) for r in rows]
    outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=64, batch_size=args.batch_size,
                              stop_strings=stop_strings_for(args.template))
    predicted = [extract_final_number(text) for text in outputs]
    gold = [extract_final_number(r["answer"]) for r in rows]
    print(f"arithmetic  n={len(rows)}  exact_match={exact_match(predicted, gold):.3f}")
    for category in sorted(set(rows["category"])):
        idx = [i for i, c in enumerate(rows["category"]) if c == category]
        em = exact_match([predicted[i] for i in idx], [gold[i] for i in idx])
        print(f"  {category}: {em:.3f} (n={len(idx)})")
    for row, text in list(zip(rows, outputs, strict=True))[: args.show_examples]:
        print(f"  {row['question']!r} -> {text!r}")


def preferences(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace) -> None:
    """Share of pairs where log p(chosen) > log p(rejected), overall and per category."""
    rows = load_bundled("bundled/preferences", "test").select(range(args.num_examples))
    template = get_template(args.template)
    prompts = [template.prompt(r["prompt"], tokenizer) for r in rows]

    def logps(column: str) -> list[float]:
        completions = [template.completion(r["prompt"], r[column], tokenizer) for r in rows]
        scored = completion_logprobs(model, tokenizer, prompts, completions, seq_length=512,
                                     batch_size=args.batch_size)
        return [s.logprob for s in scored]

    wins = [c > r for c, r in zip(logps("chosen"), logps("rejected"), strict=True)]
    print(f"preferences  n={len(rows)}  accuracy={sum(wins) / len(wins):.3f}")
    for category in sorted(set(rows["category"])):
        idx = [i for i, c in enumerate(rows["category"]) if c == category]
        print(f"  {category}: {sum(wins[i] for i in idx) / len(idx):.3f} (n={len(idx)})")


def main() -> None:
    """Load the model once, then score each requested task."""
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise SystemExit(f"--tasks: unknown {sorted(unknown)}; choose from {TASKS}")
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, device=torch.device("cpu"))
    print(f"model loaded in {time.perf_counter() - start:.1f} s")
    runners = {"fin_sentiment": sentiment, "arithmetic": arithmetic, "preferences": preferences}
    for task in tasks:
        start = time.perf_counter()
        runners[task](model, tokenizer, args)
        print(f"  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
