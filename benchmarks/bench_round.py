"""Where a round of the default configuration spends its time: local steps against everything else.

Runs ``main_sft.py``'s default configuration (embedded SmolLM2-135M, bundled fin_sentiment, 10
clients, 2 sampled per round, 5 local steps of batch 8, LoRA r 8 on q,v) through the same
``run_federated`` call, with the round evaluation left out (it runs before the first and after the
last round, not in every round; ``--eval`` keeps it and reports it apart). The round loop's pieces
are timed by wrapping them in this process, without changing them:

- local steps: each optimizer step, from the end of the previous one (the first from the start of
  the epoch, after the dataloader is built) to its end: batch fetch + forward + backward + step;
- trainer call: the rest of ``Trainer.train()`` (optimizer, accelerate prepare, dataloader, callbacks);
- client bookkeeping: the rest of ``train_client`` (broadcast, row selection, hooks, adapter copy);
- aggregation, and the rest of the round (sampling, checks, metrics, checkpoint, log line).

    .venv/bin/python benchmarks/bench_round.py                      # 10 rounds, as the default run
    .venv/bin/python benchmarks/bench_round.py --num_rounds 3 --threads 2
    .venv/bin/python benchmarks/bench_round.py --fed_alg scaffold
    .venv/bin/python benchmarks/bench_round.py --before --num_rounds 3  # as before the speed-ups
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_line, markdown_table, peak_rss_mb, set_threads  # noqa: E402

PIECES = ("local steps", "trainer call", "client bookkeeping", "aggregation", "rest of round")


def parse_args() -> argparse.Namespace:
    """Command-line flags; anything not listed here is passed to main_sft's parser unchanged."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: all CPUs, main_sft's default)")
    parser.add_argument("--eval", action="store_true", help="keep the default before/after round evaluation")
    parser.add_argument("--before", action="store_true",
                        help="without the speed-ups (TRL's LM head, fp32 frozen weights, full gc per call)")
    args, rest = parser.parse_known_args()
    args.rest = rest
    return args


class Timings:
    """Seconds accumulated per (round, piece) while the round loop runs."""

    def __init__(self) -> None:
        self.by_round: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.current_round = 0
        self.steps = 0

    def add(self, piece: str, seconds: float) -> None:
        self.by_round[self.current_round][piece] += seconds


class StepTimer(TrainerCallback):
    """Adds each optimizer step's duration to ``timings['local steps']``."""

    def __init__(self, timings: Timings) -> None:
        self.timings = timings
        self.last = 0.0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        self.timings.add("local steps", now - self.last)
        self.timings.steps += 1
        self.last = now


def timed_wrapper(fn: Callable[..., Any], timings: Timings, piece: str) -> Callable[..., Any]:
    """``fn`` that adds its duration to ``piece`` of the current round."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings.add(piece, time.perf_counter() - start)

    return wrapper


def instrument(timings: Timings) -> None:
    """Wrap the round loop's pieces (module attributes; the code itself is unchanged)."""
    import federated_learning.build as build
    import federated_learning.client as client
    import federated_learning.round_loop as round_loop

    original_one_round = round_loop.RoundLoop._one_round

    def one_round(self: Any, round_: Any, global_params: Any) -> Any:
        timings.current_round = round_.server_round + 1
        return original_one_round(self, round_, global_params)

    round_loop.RoundLoop._one_round = one_round
    round_loop.train_client = timed_wrapper(round_loop.train_client, timings, "train_client")
    client.LocalTrainer.train = timed_wrapper(client.LocalTrainer.train, timings, "LocalTrainer.train")
    original_build_aggregator = build.build_aggregator

    def build_aggregator(*args: Any, **kwargs: Any) -> Any:
        aggregator = original_build_aggregator(*args, **kwargs)
        aggregator.aggregate = timed_wrapper(aggregator.aggregate, timings, "aggregation")
        return aggregator

    build.build_aggregator = build_aggregator
    original_init = client.LocalTrainer.__init__

    def init(self: Any, trainer: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, trainer, *args, **kwargs)
        trainer.add_callback(StepTimer(timings))

    client.LocalTrainer.__init__ = init


def run(args: argparse.Namespace, output_dir: str) -> tuple[Path, Timings]:
    """The default SFT run (as main_sft.py builds it), instrumented; without --eval, with --eval_samples 0."""
    from federated_learning.cli import parse_run
    from federated_learning.run import run as run_task

    timings = Timings()
    instrument(timings)
    argv = ["--num_rounds", str(args.num_rounds), "--torch_threads", str(args.threads), "--output_dir", output_dir,
            *([] if args.eval else ["--eval_samples", "0"]), *args.rest]
    return run_task(parse_run("sft", argv)), timings


def breakdown(record: dict[str, Any], spent: dict[str, float]) -> dict[str, float]:
    """The round's seconds per piece (they add up to ``round_seconds``)."""
    steps = spent["local steps"]
    pieces = {
        "local steps": steps,
        "trainer call": spent["LocalTrainer.train"] - steps,
        "client bookkeeping": spent["train_client"] - spent["LocalTrainer.train"],
        "aggregation": spent["aggregation"],
    }
    pieces["rest of round"] = round_seconds(record) - sum(pieces.values())
    return pieces


def round_seconds(record: dict[str, Any]) -> float:
    """The round's wall time without its evaluation (which only the last round of a run has)."""
    return record["round_seconds"] - record.get("eval_seconds", 0.0)


def main() -> None:
    """Run, then print the per-round breakdown and the share outside local steps."""
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = set_threads(args.threads)
    before = contextlib.ExitStack()
    if args.before:
        from benchmarks.bench_step import full_collection_per_call, without_speedups

        before.enter_context(without_speedups())
        before.enter_context(full_collection_per_call())
    with tempfile.TemporaryDirectory() as tmp, before:
        run_dir, timings = run(args, tmp)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if r["round"] > 0]
    per_round = [breakdown(r, timings.by_round[r["round"]]) for r in rounds]
    print(machine_line(threads))
    variant = " without the speed-ups" if args.before else ""
    print(f"main_sft defaults{variant}, {len(rounds)} rounds, {timings.steps} local steps; load {load_average()}; "
          f"peak RSS {peak_rss_mb():.0f} MiB")
    header = ["round", *PIECES, "round total (s)", "outside local steps"]
    table = []
    for record, pieces in zip(rounds, per_round, strict=True):
        total = round_seconds(record)
        table.append([record["round"], *(f"{pieces[p]:.3f}" for p in PIECES), f"{total:.2f}",
                      f"{100 * (1 - pieces['local steps'] / total):.2f}%"])
    sums = {p: sum(pieces[p] for pieces in per_round) for p in PIECES}
    grand = sum(round_seconds(r) for r in rounds)
    table.append(["all", *(f"{sums[p]:.2f}" for p in PIECES), f"{grand:.1f}",
                  f"{100 * (1 - sums['local steps'] / grand):.2f}%"])
    print(markdown_table(header, table))
    later = per_round[1:] or per_round
    later_total = sum(round_seconds(r) for r in rounds[1:]) or grand
    print(f"outside local steps, rounds 2..{len(rounds)} (round 1 warms kernels up): "
          f"{100 * (1 - sum(p['local steps'] for p in later) / later_total):.2f}%")
    uploads = sorted({m["bytes_uploaded"] for r in rounds for m in r["client_metrics"].values()})
    print(f"bytes uploaded per client per round (metrics.jsonl client_metrics.bytes_uploaded): "
          f"{', '.join(f'{b:,.0f}' for b in uploads)}")
    evals = [r["eval_seconds"] for r in records if "eval_seconds" in r]
    if evals:
        listed = ", ".join(f"{e:.1f} s" for e in evals)
        print(f"evaluation (before round 1 and after the last, not per round): {listed}")


if __name__ == "__main__":
    main()
