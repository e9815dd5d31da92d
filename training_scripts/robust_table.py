"""Poisoning table: FedAvg against the robust aggregators when one client of five is malicious.

``bundled/fin_sentiment`` split IID over 5 clients, all 5 trained every round; client 0 trains as
the others, then sends a poisoned update instead of its own (``--attack``,
``federated_learning/attacks.py``; Δ its honest update, s ``--attack_scale``):

* ``none``: it is honest (the cost of each rule when nobody attacks),
* ``scale``: x + s·Δ, ``sign_flip``: x - s·Δ, ``random``: Gaussian noise of norm s·||Δ||.

Rows: FedAvg; the coordinate-wise median and trimmed mean (β 0.2: one value cut at each end of
five); Krum and Multi-Krum with f = 1; FedAvg with norm bounding (``--update_norm_bound clip``) at
C = the median honest update norm of the clean FedAvg run (``update_norm`` in its metrics.jsonl),
unless ``--max_update_norm`` gives C. Each cell is the test accuracy after the last round; the
report adds how often Krum and Multi-Krum selected the attacker. Finished runs are reused
(``--fresh`` retrains).

    .venv/bin/python training_scripts/robust_table.py --torch_threads 1
    .venv/bin/python training_scripts/robust_table.py --smoke   # tiny model, a minute
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training_scripts.reproduce_table import (  # noqa: E402
    TASKS,
    Budget,
    _names,
    final_eval,
    prepare_output,
    run_argv,
    shared_base_scores,
    train_or_reuse,
)

logger = logging.getLogger("robust_table")

BUDGET = Budget(
    num_clients=5, sample_clients=5, num_rounds=4, max_steps=6, batch_size=4, seq_length=256, learning_rate=2e-3,
    fedopt_eta=1e-2, server_lr=1.0, dirichlet_alpha=1.0, dataset_sample=1500, eval_samples=90, eval_every=0,
    eval_batch_size=45, local_clients=(),
)
SMOKE = Budget(
    num_clients=5, sample_clients=5, num_rounds=1, max_steps=1, batch_size=2, seq_length=256, learning_rate=5e-4,
    fedopt_eta=1e-2, server_lr=1.0, dirichlet_alpha=1.0, dataset_sample=100, eval_samples=6, eval_every=0,
    eval_batch_size=6, local_clients=(),
)
MALICIOUS = 0  # the attacking client's id
ATTACKS = ("none", "scale", "sign_flip", "random")


@dataclass(frozen=True)
class Method:
    """One row: its label, run name, --fed_alg and flags."""

    label: str
    name: str
    fed_alg: str
    flags: tuple[str, ...] = ()


METHODS = (
    Method("FedAvg", "fedavg", "fedavg"),
    Method("FedMedian", "fedmedian", "fedmedian"),
    Method("FedTrimmedAvg (β 0.2)", "fedtrimmedavg", "fedtrimmedavg", ("--trim_fraction", "0.2")),
    Method("Krum (f 1)", "krum", "krum", ("--num_malicious", "1")),
    Method("Multi-Krum (f 1)", "multikrum", "multikrum", ("--num_malicious", "1")),
    Method("FedAvg + norm bound (clip)", "fedavg_clip", "fedavg", ("--update_norm_bound", "clip")),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags: output folder, model, subsets of rows and columns, the attack's scale, threads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="output/robust_table")
    parser.add_argument("--model_name_or_path", default=None,
                        help="default: 'embedded' (with --smoke: a tiny random model built in <output_dir>)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and budget: check the pipeline quickly")
    parser.add_argument("--methods", default=",".join(m.name for m in METHODS),
                        help="comma-separated rows: " + ", ".join(m.name for m in METHODS))
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated columns: " + ", ".join(ATTACKS))
    parser.add_argument("--attack_scale", type=float, default=10.0, help="s of every attack")
    parser.add_argument("--max_update_norm", type=float, default=None,
                        help="C of the norm-bound row (default: the clean FedAvg run's median update norm)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--torch_threads", type=int, default=0, help="0: one per available CPU")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in METHODS}
    args.method_list = [by_name[n] for n in _names(args.methods, list(by_name), "--methods")]
    args.attack_list = _names(args.attacks, list(ATTACKS), "--attacks")
    if not args.attack_scale > 0:
        raise SystemExit(f"--attack_scale must be positive, got {args.attack_scale}")
    if args.max_update_norm is not None and not args.max_update_norm > 0:
        raise SystemExit(f"--max_update_norm must be positive, got {args.max_update_norm}")
    args.budget = SMOKE if args.smoke else BUDGET
    return args


def cell_argv(method: Method, attack: str, args: argparse.Namespace, model: str, runs: Path,
              bound: float | None) -> list[str]:
    """main_sft's flags of one cell: the reproduction table's sentiment run, IID over 5 clients, this row's
    aggregator and this column's attack."""
    flags = [*run_argv(TASKS["sentiment"], method.fed_alg, args.budget, model, runs, args.seed, args.torch_threads),
             "--split_strategy", "iid", "--output_dir", str(runs / attack), "--run_name", method.name,
             *method.flags]
    if bound is not None:
        flags += ["--max_update_norm", repr(bound)]
    if attack != "none":
        flags += ["--attack", attack, "--attack_clients", str(MALICIOUS), "--attack_scale", repr(args.attack_scale)]
    return flags


def honest_norm(records: Sequence[dict[str, Any]]) -> float:
    """The median ``update_norm`` over every client-round of a run."""
    norms = [m["update_norm"] for r in records for m in r.get("client_metrics", {}).values() if "update_norm" in m]
    return float(statistics.median(norms))


def attacker_selected(records: Sequence[dict[str, Any]]) -> tuple[int, int] | None:
    """(rounds in which Krum's selection held the attacker, rounds) of a run, None without selections."""
    rounds = [r["aggregation"]["selected_clients"] for r in records if "selected_clients" in r.get("aggregation", {})]
    return (sum(MALICIOUS in s for s in rounds), len(rounds)) if rounds else None


def render(cells: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace, model: str, bound: float | None,
           minutes: float) -> str:
    """The markdown report: settings, the accuracy table, Krum's choices, the time."""
    b = args.budget
    bound_text = f"; norm bound C = {bound:.4g}." if bound is not None else "."
    lines = [f"`bundled/fin_sentiment` ({b.dataset_sample} rows), IID over {b.num_clients} clients, all "
             f"{b.sample_clients} every round, {b.num_rounds} rounds x {b.max_steps} local steps x batch "
             f"{b.batch_size}, learning rate {b.learning_rate}; model `{model}`; seed {args.seed}. Client "
             f"{MALICIOUS} attacks with s = {args.attack_scale:g}{bound_text}", "",
             "| Aggregator | " + " | ".join(f"{a} (%)" for a in args.attack_list) + " |",
             "|---" * (len(args.attack_list) + 1) + "|"]
    for method in args.method_list:
        row = [f"{100 * cells[method.name][a]['accuracy']:.1f}" for a in args.attack_list]
        lines.append(f"| {method.label} | " + " | ".join(row) + " |")
    picks = [(m, a, cells[m.name][a]["attacker_selected"]) for m in args.method_list for a in args.attack_list
             if a != "none" and cells[m.name][a]["attacker_selected"] is not None]
    if picks:
        lines += ["", "Rounds in which Krum's selection held the attacker: " + "; ".join(
            f"{m.label} {a}: {hit}/{total}" for m, a, (hit, total) in picks) + "."]
    lines += ["", f"Base model (round 0): {100 * cells['base']:.1f}%; the runs' wall time {minutes:.1f} min."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    """Train what is missing (the clean FedAvg run first: it sets C), then write results.md and results.json."""
    args = parse_args(argv)
    out, model = prepare_output(args)
    runs = out / "runs"
    cache: dict[str, dict[str, float]] = {}
    seconds = 0.0  # the runs' own wall times (a reused run's as it was measured)
    order = sorted(((m, a) for m in args.method_list for a in args.attack_list),
                   key=lambda cell: cell[0].name != "fedavg" or cell[1] != "none")
    bound = args.max_update_norm
    needs_bound = any(m.name == "fedavg_clip" for m in args.method_list)
    if needs_bound and bound is None:
        clean = METHODS[0]
        records, _ = train_or_reuse(runs / "none" / clean.name, cell_argv(clean, "none", args, model, runs, None),
                                    args.budget.num_rounds, args.fresh, shared_base_scores(cache, "sentiment"))
        bound = honest_norm(records)
        logger.info("norm bound C = %.4g, the median update norm of the clean FedAvg run", bound)
    cells: dict[str, Any] = {}
    for method, attack in order:
        records, took = train_or_reuse(
            runs / attack / method.name,
            cell_argv(method, attack, args, model, runs, bound if method.name == "fedavg_clip" else None),
            args.budget.num_rounds, args.fresh, shared_base_scores(cache, "sentiment"))
        seconds += took or 0.0
        final = final_eval(records, args.budget.num_rounds)
        assert final is not None
        cells.setdefault(method.name, {})[attack] = {"accuracy": final["eval_accuracy"],
                                                     "attacker_selected": attacker_selected(records)}
        cells["base"] = next(r["eval_accuracy"] for r in records if r["round"] == 0)
    report = render(cells, args, model, bound, seconds / 60)
    (out / "results.md").write_text(report)
    summary = {"model": model, "norm_bound": bound, "attack_scale": args.attack_scale, "cells": cells}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    logger.info("wrote %s and results.json\n%s", out / "results.md", report)
    return out / "results.md"


if __name__ == "__main__":
    main()
