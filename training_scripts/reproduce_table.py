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

Evaluator = Callable[[Any], dict[str, float]]  # federated_learning.round_loop.Evaluator, without importing torch

logger = logging.getLogger("reproduce_table")

FL_ALGORITHMS = ("fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam")
DISPLAY_NAMES = {
    "fedavg": "FedAvg", "fedprox": "FedProx", "scaffold": "SCAFFOLD", "fedavgm": "FedAvgM",
    "fedadagrad": "FedAdagrad", "fedyogi": "FedYogi", "fedadam": "FedAdam",
}


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
METRIC_NAMES = {"eval_accuracy": "accuracy", "eval_macro_f1": "macro-F1", "eval_exact_match": "exact match"}


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
                        help="comma-separated subset of local<K> and the FL algorithms (default: all)")
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
    all_methods = [f"local{k}" for k in args.budget.local_clients] + list(FL_ALGORITHMS)
    args.method_list = all_methods if args.methods is None else _names(args.methods, all_methods, "--methods")
    return args


def _show(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _names(text: str, valid: Sequence[str], flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise SystemExit(f"{flag}: unknown or empty {unknown}; choose from {', '.join(valid)}")
    return names


def run_argv(
    task: BundledTask, method: str, budget: Budget, model: str, runs_dir: Path, seed: int, threads: int
) -> list[str]:
    """The main_sft command line of one (task, method) run."""
    return [
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
        "--output_dir", str(runs_dir / task.name), "--run_name", method,
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


def train_one(task: BundledTask, method: str, args: argparse.Namespace, model: str, runs_dir: Path) -> dict[str, Any]:
    """Train (or reuse) one run; return its final metrics, curves, client size and wall time."""
    from federated_learning.cli import parse_run
    from federated_learning.run import run

    run_dir = runs_dir / task.name / method
    records = read_metrics(run_dir)
    seconds = None
    if args.fresh or final_eval(records, args.budget.num_rounds) is None:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an unfinished or stale run: start it over
        logger.info("=== %s / %s", task.name, method)
        start = time.perf_counter()
        cfg = parse_run("sft", run_argv(task, method, args.budget, model, runs_dir, args.seed, args.torch_threads))
        run(cfg, wrap_evaluator=shared_base_scores(args.base_eval_cache, task.dataset))
        seconds = time.perf_counter() - start
        gc.collect()  # drop the previous run's model before the next one loads
        records = read_metrics(run_dir)
        (run_dir / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    elif (run_dir / "wall_seconds.txt").exists():
        seconds = float((run_dir / "wall_seconds.txt").read_text())
    final = final_eval(records, args.budget.num_rounds)
    if final is None:
        raise RuntimeError(f"{run_dir}: no evaluation after round {args.budget.num_rounds} in metrics.jsonl")
    partition = json.loads((run_dir / "partition.json").read_text())
    return {
        "final": final,
        "base": next((r for r in records if r["round"] == 0), None),
        "curves": {m: eval_curve(records, m) for m in task.metrics},
        "partition": partition,
        "seconds": seconds,
    }


def _fmt(value: float | None, as_percent: bool = True) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{100 * value:.1f}" if as_percent else f"{value:.3f}"


def table_rows(results: dict[str, dict[str, dict[str, Any]]], tasks: Sequence[BundledTask],
               methods: Sequence[str]) -> list[tuple[str, list[float | None]]]:
    """(method label, one value per task metric) rows: base model, local clients, their mean, FL algorithms."""
    columns = [(task, metric) for task in tasks for metric in task.metrics]

    def value(method: str, task: BundledTask, metric: str) -> float | None:
        run = results.get(task.name, {}).get(method)
        return None if run is None else run["final"].get(metric)

    rows: list[tuple[str, list[float | None]]] = []
    base = []
    for task, metric in columns:
        run = next(iter(results.get(task.name, {}).values()), None)
        base.append(None if run is None or run["base"] is None else run["base"].get(metric))
    rows.append(("Base model (no training)", base))
    local = [m for m in methods if m.startswith("local")]
    for method in local:
        rows.append((f"Local only: client {method[5:]}", [value(method, t, m) for t, m in columns]))
    if local:
        means = []
        for task, metric in columns:
            values = [v for v in (value(m, task, metric) for m in local) if v is not None]
            means.append(sum(values) / len(values) if values else None)
        rows.append((f"Local only: mean of {len(local)} client{'s' if len(local) > 1 else ''}", means))
    for method in methods:
        if not method.startswith("local"):
            rows.append((DISPLAY_NAMES.get(method, method), [value(method, t, m) for t, m in columns]))
    return rows


def render_markdown(results: dict[str, dict[str, dict[str, Any]]], tasks: Sequence[BundledTask], methods: Sequence[str],
                    budget: Budget, model: str, seed: int, total_seconds: float) -> str:
    """results.md: the setup, the table and the check of the paper's claim against local training."""
    header = ["Method"] + [f"{t.name} {METRIC_NAMES.get(m, m)}" for t in tasks for m in t.metrics]
    lines = [
        "# Local training vs federated algorithms on the bundled tasks",
        "",
        f"Model `{model}`; Dirichlet split (alpha {budget.dirichlet_alpha}) of {budget.dataset_sample} training rows "
        f"over {budget.num_clients} clients (sentiment by label, arithmetic by category); FL samples "
        f"{budget.sample_clients} clients per round; every run: {budget.num_rounds} rounds x {budget.max_steps} "
        f"local steps x batch {budget.batch_size} per participating client, learning rate {budget.learning_rate} "
        f"(cosine over rounds), FedOpt server step {budget.fedopt_eta}, FedAvgM/SCAFFOLD server step "
        f"{budget.server_lr}, seed {seed}. Scores in percent on {budget.eval_samples} rows of the held-out test "
        "split (unseen templates, companies and operand pairs), greedy decoding.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    rows = table_rows(results, tasks, methods)
    for label, values in rows:
        lines.append("| " + " | ".join([label, *(_fmt(v) for v in values)]) + " |")
    lines += ["", *claim_check(rows, tasks), "",
              f"Total wall time of the runs trained now: {total_seconds / 60:.1f} min."]
    sizes = {t.name: next(iter(results[t.name].values()))["partition"]["sizes"] for t in tasks if results.get(t.name)}
    lines += ["", "Client sizes: " + "; ".join(f"{name} {s}" for name, s in sizes.items()) + "."]
    return "\n".join(lines) + "\n"


def claim_check(rows: Sequence[tuple[str, list[float | None]]], tasks: Sequence[BundledTask]) -> list[str]:
    """One line per headline metric: which FL algorithms beat the mean local-only client."""
    mean_row = next((values for label, values in rows if label.startswith("Local only: mean")), None)
    if mean_row is None:
        return []
    fl_rows = [(label, values) for label, values in rows if label in DISPLAY_NAMES.values()]
    out = []
    column = 0
    for task in tasks:
        baseline = mean_row[column]
        if baseline is not None:
            beaten = [label for label, values in fl_rows if values[column] is not None and values[column] > baseline]
            losers = [label for label, values in fl_rows if label not in beaten]
            verdict = "all of them" if not losers else "none" if not beaten else f"all but {', '.join(losers)}"
            out.append(f"- {task.name} {METRIC_NAMES.get(task.metrics[0])}: {len(beaten)} of {len(fl_rows)} FL "
                       f"algorithms beat the mean local-only client ({_fmt(baseline)}): {verdict}.")
        column += len(task.metrics)
    return out


def plot_curves(results: dict[str, dict[str, dict[str, Any]]], tasks: Sequence[BundledTask], methods: Sequence[str],
                path: Path) -> None:
    """Headline metric vs round, one panel per task: FL algorithms solid, local clients dashed grey."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * len(tasks), 4.2), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=True):
        metric = task.metrics[0]
        for method in methods:
            run = results.get(task.name, {}).get(method)
            if run is None or not run["curves"][metric]:
                continue
            rounds, values = zip(*run["curves"][metric], strict=True)
            percent = [100 * v for v in values]
            if method.startswith("local"):
                ax.plot(rounds, percent, "--", color="0.6", marker=".", label=f"local client {method[5:]}")
            else:
                ax.plot(rounds, percent, "-", marker="o", markersize=3, label=DISPLAY_NAMES.get(method, method))
        ax.set_title(f"{task.name} ({task.dataset})")
        ax.set_xlabel("round")
        ax.set_ylabel(f"held-out {METRIC_NAMES.get(metric, metric)} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> Path:
    """Train what is missing, then write results.md, results.json and accuracy_vs_round.png; return results.md."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model_name_or_path
    if model is None and args.smoke:
        from utils.tiny_model import save_tiny_model

        model = str(out / "tiny-model") if (out / "tiny-model").exists() else str(save_tiny_model(out / "tiny-model"))
    model = model or "embedded"
    runs_dir = out / "runs"
    plan = [(task, method) for task in args.task_list for method in args.method_list]
    logger.info("%d runs: %s", len(plan), ", ".join(f"{t.name}/{m}" for t, m in plan))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    start = time.perf_counter()
    for task, method in plan:
        results.setdefault(task.name, {})[method] = train_one(task, method, args, model, runs_dir)
    total = time.perf_counter() - start
    report = render_markdown(results, args.task_list, args.method_list, args.budget, model, args.seed, total)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps(
        {"budget": dataclasses.asdict(args.budget), "model": model, "seed": args.seed, "results": results}, indent=1))
    plot_curves(results, args.task_list, args.method_list, out / "accuracy_vs_round.png")
    logger.info("wrote %s, results.json and accuracy_vs_round.png\n%s", out / "results.md", report)
    return out / "results.md"


if __name__ == "__main__":
    main()
