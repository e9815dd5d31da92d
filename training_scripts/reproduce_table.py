"""Reproduce OpenFedLLM's central comparison on the bundled tasks: local-only training vs FL algorithms.

On ``bundled/fin_sentiment`` (Dirichlet split over ``label``) and ``bundled/arithmetic``
(Dirichlet split over ``category``) it trains, with one budget of local steps per run
(``--num_rounds`` x ``--max_steps`` steps of ``--batch_size`` rows for every participating client):

* ``local<K>`` for a few clients K: client K trains alone on its own shard for all rounds;
* FedAvg and the six other algorithms (FedProx, SCAFFOLD, FedAvgM, FedAdagrad, FedYogi, FedAdam),
  each sampling ``--sample_clients`` of ``--num_clients`` clients per round, on the same split and
  the same client schedule (both follow ``--seed``).

Each run is the SFT task's run (``main_sft.py``'s flags) in this process (the model reloads from
its safetensors cache in about a second); the round loop's evaluation scores the global adapter on
the held-out, class-balanced test split before training, every ``--eval_every`` rounds and at the
end, into the run's ``metrics.jsonl``. This script reads those files and writes ``results.md``
(rows: methods; columns: task metrics), ``results.json`` and ``accuracy_vs_round.png``.
A finished run is not trained again, so an interrupted reproduction continues where it stopped.

    .venv/bin/python training_scripts/reproduce_table.py                 # full table (see --help)
    .venv/bin/python training_scripts/reproduce_table.py --smoke         # tiny model, ~1 minute
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training_scripts.table_report import (  # noqa: E402
    lora_b_norm,
    per_round_bytes,
    plot_curves,
    render_markdown,
)

Evaluator = Callable[[Any], dict[str, float]]  # federated_learning.round_loop.Evaluator, without importing torch

logger = logging.getLogger("reproduce_table")

FL_ALGORITHMS = ("fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam")
# Run when asked (--methods); with --client_lora_ranks only the methods that take lower-rank clients.
LORA_ALGORITHMS = ("ffa_lora", "fedsa_lora", "flora", "flexlora", "fedex_lora", "rolora", "hetlora")
RANKED = ("fedavg", "flora", "flexlora", "hetlora")


@dataclass(frozen=True)
class BundledTask:
    """One bundled task: its dataset, the column the Dirichlet split skews, and its metrics."""

    name: str
    dataset: str
    partition_column: str
    metrics: tuple[str, ...]  # eval_* keys shown in the table; the first is the headline metric


TASKS = {
    "sentiment": BundledTask("sentiment", "bundled/fin_sentiment", "label", ("eval_accuracy", "eval_macro_f1")),
    "arithmetic": BundledTask("arithmetic", "bundled/arithmetic", "category", ("eval_exact_match",)),
}


@dataclass(frozen=True)
class Budget:
    """The settings every run of the table shares."""

    num_clients: int
    sample_clients: int
    num_rounds: int
    max_steps: int
    batch_size: int
    seq_length: int
    learning_rate: float
    fedopt_eta: float  # FedAdagrad/FedYogi/FedAdam server step, scaled to the client step (see the README)
    server_lr: float  # FedAvgM and SCAFFOLD server step (the CLI default, 1)
    dirichlet_alpha: float
    dataset_sample: int
    eval_samples: int
    eval_every: int
    eval_batch_size: int
    local_clients: tuple[int, ...]


# Sized to finish within an hour on 2 CPU cores with the embedded SmolLM2-135M (see the README).
FULL = Budget(
    num_clients=10, sample_clients=2, num_rounds=6, max_steps=5, batch_size=8, seq_length=256, learning_rate=2e-3,
    fedopt_eta=1e-2, server_lr=1.0, dirichlet_alpha=0.5, dataset_sample=3000, eval_samples=90, eval_every=3,
    eval_batch_size=45, local_clients=(0, 1, 2),
)
# Exercises every code path on the tiny random model in about a minute; the numbers mean nothing.
SMOKE = Budget(
    num_clients=4, sample_clients=2, num_rounds=2, max_steps=1, batch_size=2, seq_length=256, learning_rate=5e-4,
    fedopt_eta=1e-2, server_lr=1.0, dirichlet_alpha=0.5, dataset_sample=200, eval_samples=6, eval_every=1,
    eval_batch_size=6, local_clients=(0, 1),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags: output folder, model, tasks/methods to run, and overrides of the budget."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="output/reproduce_table", help="runs go to <dir>/runs/<task>/<method>")
    parser.add_argument("--model_name_or_path", default=None,
                        help="default: 'embedded' (with --smoke: a tiny random model built in <output_dir>)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and budget: check the pipeline quickly")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)}")
    parser.add_argument("--methods", default=None,
                        help="comma-separated local<K>, FL algorithms and LoRA-aware ones (default: local<K> and "
                             f"the classic {len(FL_ALGORITHMS)})")
    parser.add_argument("--client_lora_ranks", default=None,
                        help=f"e.g. 2,4,8 (the largest: --peft_lora_r 8): each client's LoRA rank, cycled over client "
                             f"ids, for {', '.join(RANKED)}; runs are named <method>-ranks-2-4-8")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--torch_threads", type=int, default=0, help="0: one per available CPU")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    for spec in dataclasses.fields(Budget):
        kind = str if spec.name == "local_clients" else float if spec.type == "float" else int
        full, smoke = getattr(FULL, spec.name), getattr(SMOKE, spec.name)
        parser.add_argument(f"--{spec.name}", type=kind, default=None,
                            help=f"default {_show(full)} ({_show(smoke)} with --smoke)")
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Budget) if getattr(args, f.name) is not None}
    if "local_clients" in overrides:
        overrides["local_clients"] = tuple(int(k) for k in overrides["local_clients"].split(",") if k)
    args.budget = dataclasses.replace(SMOKE if args.smoke else FULL, **overrides)
    args.base_eval_cache = {}  # dataset name -> eval metrics of the untrained model
    args.task_list = [TASKS[name] for name in _names(args.tasks, TASKS, "--tasks")]
    default = [f"local{k}" for k in args.budget.local_clients] + list(FL_ALGORITHMS)
    all_methods = default + list(LORA_ALGORITHMS)
    args.method_list = default if args.methods is None else _names(args.methods, all_methods, "--methods")
    if args.client_lora_ranks is not None:
        args.method_list = _names(",".join(args.method_list), RANKED, "--methods with --client_lora_ranks")
    return args


def run_name(method: str, ranks: str | None) -> str:
    """The run folder of ``method`` (with client ranks: their own, so the two tables never share a run)."""
    return method if ranks is None else f"{method}-ranks-{ranks.replace(',', '-')}"


def _show(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _names(text: str, valid: Sequence[str], flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise SystemExit(f"{flag}: unknown or empty {unknown}; choose from {', '.join(valid)}")
    return names


def run_argv(
    task: BundledTask, method: str, budget: Budget, model: str, runs_dir: Path, seed: int, threads: int,
    ranks: str | None = None,
) -> list[str]:
    """The main_sft command line of one (task, method) run."""
    return [*(["--client_lora_ranks", ranks] if ranks else []),
        "--model_name_or_path", model, "--dataset_name", task.dataset, "--dataset_sample", str(budget.dataset_sample),
        "--split_strategy", "dirichlet", "--partition_column", task.partition_column,
        "--dirichlet_alpha", str(budget.dirichlet_alpha), "--num_clients", str(budget.num_clients),
        "--sample_clients", str(budget.sample_clients), "--num_rounds", str(budget.num_rounds),
        "--max_steps", str(budget.max_steps), "--batch_size", str(budget.batch_size),
        "--seq_length", str(budget.seq_length), "--learning_rate", str(budget.learning_rate),
        "--fedopt_eta", str(budget.fedopt_eta), "--server_lr", str(budget.server_lr),
        "--fed_alg", method, "--seed", str(seed), "--torch_threads", str(threads),
        "--eval_samples", str(budget.eval_samples), "--eval_every", str(budget.eval_every),
        "--eval_batch_size", str(budget.eval_batch_size), "--save_model_freq", str(budget.num_rounds),
        "--output_dir", str(runs_dir / task.name), "--run_name", run_name(method, ranks),
    ]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl ([] when there is none)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def eval_curve(records: Sequence[dict[str, Any]], metric: str) -> list[tuple[int, float]]:
    """(round, value) of every record that holds ``metric``; round 0 is the untrained model."""
    return [(int(r["round"]), float(r[metric])) for r in records if metric in r]


def final_eval(records: Sequence[dict[str, Any]], num_rounds: int) -> dict[str, float] | None:
    """The eval_* metrics of the last round, or None when the run did not finish."""
    for record in reversed(records):
        if record["round"] == num_rounds and any(k.startswith("eval_") for k in record):
            return {k: float(v) for k, v in record.items() if k.startswith("eval_")}
    return None


def shared_base_scores(cache: dict[str, dict[str, float]], dataset: str) -> Callable[[Evaluator], Evaluator]:
    """Wrap a run's round evaluation so that its first call, per dataset, is computed once and then reused.

    The round loop evaluates the untrained model before round 1. With a zero-initialised LoRA B
    that model is the base model in every run of a task, so its (deterministic, greedy) scores are
    the same in every run: evaluating them once per task saves a full evaluation per run.
    """

    def wrap(evaluate: Evaluator) -> Evaluator:
        calls = 0

        def first_call_shared(model: Any) -> dict[str, float]:
            nonlocal calls
            calls += 1
            if calls > 1:
                return evaluate(model)
            if dataset not in cache:
                cache[dataset] = evaluate(model)
            return dict(cache[dataset])

        return first_call_shared

    return wrap


def train_or_reuse(run_dir: Path, argv: Sequence[str], num_rounds: int, fresh: bool,
                   wrap_evaluator: Callable[[Evaluator], Evaluator], task: str = "sft",
                   ) -> tuple[list[dict[str, Any]], float | None]:
    """Train the ``task`` run ``argv`` (main_sft's flags by default; writing ``run_dir``) unless it finished
    (``fresh``: train it again); return its metrics records and wall seconds (None when it was reused and the time
    was not kept)."""
    from federated_learning.cli import parse_run
    from federated_learning.run import run

    records = read_metrics(run_dir)
    if not fresh and final_eval(records, num_rounds) is not None:
        seconds_file = run_dir / "wall_seconds.txt"
        return records, float(seconds_file.read_text()) if seconds_file.exists() else None
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished or stale run: start it over
    logger.info("=== %s", run_dir)
    start = time.perf_counter()
    run(parse_run(task, list(argv)), wrap_evaluator=wrap_evaluator)
    seconds = time.perf_counter() - start
    gc.collect()  # drop the previous run's model before the next one loads
    (run_dir / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    records = read_metrics(run_dir)
    if final_eval(records, num_rounds) is None:
        raise RuntimeError(f"{run_dir}: no evaluation after round {num_rounds} in metrics.jsonl")
    return records, seconds


def train_one(task: BundledTask, method: str, args: argparse.Namespace, model: str, runs_dir: Path) -> dict[str, Any]:
    """Train (or reuse) one run; return its final metrics, curves, client size and wall time."""
    run_dir = runs_dir / task.name / run_name(method, args.client_lora_ranks)
    argv = run_argv(task, method, args.budget, model, runs_dir, args.seed, args.torch_threads, args.client_lora_ranks)
    records, seconds = train_or_reuse(run_dir, argv, args.budget.num_rounds, args.fresh,
                                      shared_base_scores(args.base_eval_cache, task.dataset))
    final = final_eval(records, args.budget.num_rounds)
    assert final is not None
    partition = json.loads((run_dir / "partition.json").read_text())
    return {
        "lora_b_norm": lora_b_norm(run_dir / f"checkpoint-{args.budget.num_rounds}"),
        "bytes_per_round": {direction: per_round_bytes(records, direction) for direction in ("uploaded", "downloaded")},
        "final": final,
        "base": next((r for r in records if r["round"] == 0), None),
        "curves": {m: eval_curve(records, m) for m in task.metrics},
        "partition": partition,
        "seconds": seconds,
    }


def prepare_output(args: argparse.Namespace) -> tuple[Path, str]:
    """Set up logging and ``--output_dir``; return it and the model to train (with --smoke and no model: a tiny
    random one, built once in the output folder)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model_name_or_path
    if model is None and args.smoke:
        from utils.tiny_model import save_tiny_model

        model = str(out / "tiny-model") if (out / "tiny-model").exists() else str(save_tiny_model(out / "tiny-model"))
    return out, model or "embedded"


def main(argv: Sequence[str] | None = None) -> Path:
    """Train what is missing, then write results.md, results.json and accuracy_vs_round.png; return results.md."""
    args = parse_args(argv)
    out, model = prepare_output(args)
    runs_dir = out / "runs"
    plan = [(task, method) for task in args.task_list for method in args.method_list]
    logger.info("%d runs: %s", len(plan), ", ".join(f"{t.name}/{m}" for t, m in plan))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    start = time.perf_counter()
    for task, method in plan:
        results.setdefault(task.name, {})[method] = train_one(task, method, args, model, runs_dir)
    total = time.perf_counter() - start
    report = render_markdown(results, args.task_list, args.method_list, args.budget, model, args.seed, total,
                             args.client_lora_ranks)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps(
        {"budget": dataclasses.asdict(args.budget), "model": model, "seed": args.seed,
         "client_lora_ranks": args.client_lora_ranks, "results": results}, indent=1))
    plot_curves(results, args.task_list, args.method_list, out / "accuracy_vs_round.png")
    logger.info("wrote %s, results.json and accuracy_vs_round.png\n%s", out / "results.md", report)
    return out / "results.md"


if __name__ == "__main__":
    main()
