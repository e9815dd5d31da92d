"""Every client's own view: the global adapter against personalised models, scored on each client's held-out set.

Two tables, each a handful of runs with ``--eval_per_client`` (each client's held-out set drawn with
its own training mix, ``federated_learning/personalization.py``):

* ``sentiment`` (SFT): ``bundled/fin_sentiment`` with the reproduction table's Dirichlet split and
  budget (``reproduce_table.py``: alpha 0.5 over 10 clients, 2 per round, 6 rounds x 5 local
  steps); rows: FedAvg's global adapter, FedAvg + local fine-tuning (``--personalize_steps``),
  FedSA-LoRA (its global mean-B model and each client's own B), Ditto (personal adapters), IFCA
  (its global adapter, the cluster most clients chose last, and each client's cluster); columns:
  mean, worst and best client accuracy, their standard deviation.
* ``preferences`` (DPO): ``bundled/style_preferences``, one client per user (natural split, 10
  users in two groups with conflicting preferences: concise against detailed answers); rows:
  FedAvg's global adapter, FedAvg + local fine-tuning, Ditto, IFCA; columns: each group's
  preference accuracy (the mean over its users), the worst group's, and the worst client's.

Every run is the task's own run (``main_sft.py`` / ``main_dpo.py`` flags) in this process, scored
before training and after the last round. The script writes ``results.md``, ``results.json`` and
``per_client.png`` (each client's score under each row) to ``--output_dir``; finished runs are
reused (``--fresh`` retrains).

    .venv/bin/python training_scripts/personalization_table.py --table sentiment --torch_threads 1
    .venv/bin/python training_scripts/personalization_table.py --table preferences --torch_threads 1
    .venv/bin/python training_scripts/personalization_table.py --table sentiment --smoke   # tiny model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training_scripts.reproduce_table import FULL, SMOKE, TASKS, prepare_output, run_argv, train_or_reuse  # noqa: E402

logger = logging.getLogger("personalization_table")


@dataclass(frozen=True)
class Row:
    """One row of a table: the run it reads and the per-client view it shows."""

    label: str
    method: str  # the run (its --fed_alg)
    view: str  # metrics.jsonl key: per_client (the global adapter), personal, finetuned


@dataclass(frozen=True)
class Table:
    """One table: its task, the runs' flags, the metric per client and the rows."""

    task: str  # "sft" or "dpo"
    metric: str  # the per-client metric the table reads
    rows: tuple[Row, ...]


SENTIMENT = Table("sft", "eval_accuracy", (
    Row("FedAvg: global adapter", "fedavg", "per_client"),
    Row("FedAvg + local fine-tuning", "fedavg", "finetuned"),
    Row("FedSA-LoRA: global (mean B)", "fedsa_lora", "per_client"),
    Row("FedSA-LoRA: each client's own B", "fedsa_lora", "personal"),
    Row("Ditto: personal adapters", "ditto", "personal"),
    Row("IFCA: global (the majority cluster)", "ifca", "per_client"),
    Row("IFCA: each client's cluster", "ifca", "personal"),
))
PREFERENCES = Table("dpo", "eval_preference_accuracy", (
    Row("FedAvg: global adapter", "fedavg", "per_client"),
    Row("FedAvg + local fine-tuning", "fedavg", "finetuned"),
    Row("Ditto: personal adapters", "ditto", "personal"),
    Row("IFCA: global (the majority cluster)", "ifca", "per_client"),
    Row("IFCA: each client's cluster", "ifca", "personal"),
))
TABLES = {"sentiment": SENTIMENT, "preferences": PREFERENCES}
GROUPS = ("concise", "detailed")  # bundled/style_preferences' user groups


@dataclass(frozen=True)
class Settings:
    """What the personalised methods take, besides the task's budget."""

    eval_per_client: int
    personalize_steps: int
    ditto_lambda: float
    ifca_clusters: int


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags: which table, output folder, model, the methods' settings, threads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", choices=sorted(TABLES), default="sentiment")
    parser.add_argument("--output_dir", default=None, help="default: output/personalization_table/<table>")
    parser.add_argument("--model_name_or_path", default=None,
                        help="default: 'embedded' (with --smoke: a tiny random model built in <output_dir>)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and budget: check the pipeline quickly")
    parser.add_argument("--eval_per_client", type=int, default=20, help="held-out examples per client")
    parser.add_argument("--personalize_steps", type=int, default=5, help="local fine-tuning steps (FedAvg's run)")
    parser.add_argument("--ditto_lambda", type=float, default=20.0)
    parser.add_argument("--ifca_clusters", type=int, default=2)
    parser.add_argument("--methods", default=None,
                        help="comma-separated runs to include (default: every run of the table: fedavg, fedsa_lora, "
                             "ditto, ifca for sentiment; fedavg, ditto, ifca for preferences)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--torch_threads", type=int, default=0, help="0: one per available CPU")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    args = parser.parse_args(argv)
    args.output_dir = args.output_dir or f"output/personalization_table/{args.table}"
    runs = list(dict.fromkeys(row.method for row in TABLES[args.table].rows))
    args.method_list = runs if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.method_list if m not in runs]
    if unknown or not args.method_list:
        raise SystemExit(f"--methods: unknown or empty {unknown}; the {args.table} table runs {', '.join(runs)}")
    args.settings = Settings(args.eval_per_client, args.personalize_steps, args.ditto_lambda, args.ifca_clusters)
    return args


def method_flags(method: str, settings: Settings) -> list[str]:
    """The flags of one run besides the task's: its algorithm, and the per-client evaluation."""
    flags = ["--fed_alg", method, "--eval_per_client", str(settings.eval_per_client), "--eval_every", "0"]
    if method == "fedavg":
        flags += ["--personalize_steps", str(settings.personalize_steps)]
    if method == "ditto":
        flags += ["--ditto_lambda", str(settings.ditto_lambda)]
    if method == "ifca":
        flags += ["--ifca_clusters", str(settings.ifca_clusters)]
    return flags


def sentiment_argv(method: str, args: argparse.Namespace, model: str, runs: Path) -> list[str]:
    """main_sft's flags: the reproduction table's sentiment run, with this table's evaluation."""
    budget = SMOKE if args.smoke else FULL
    return [*run_argv(TASKS["sentiment"], "fedavg", budget, model, runs, args.seed, args.torch_threads),
            "--output_dir", str(runs), "--run_name", method, *method_flags(method, args.settings)]


def num_rounds(args: argparse.Namespace) -> int:
    """The rounds of every run of the table."""
    if args.table == "sentiment":
        return (SMOKE if args.smoke else FULL).num_rounds
    return 2 if args.smoke else 6


def preferences_argv(method: str, args: argparse.Namespace, model: str, runs: Path) -> list[str]:
    """main_dpo's flags: one client per user of bundled/style_preferences, DPO's defaults otherwise."""
    rounds, (steps, batch) = str(num_rounds(args)), (("1", "2") if args.smoke else ("4", "8"))
    return ["--model_name_or_path", model, "--dataset_name", "bundled/style_preferences", "--split_strategy",
            "natural", "--partition_column", "user", "--num_clients", "10", "--sample_clients", "2", "--num_rounds",
            rounds, "--max_steps", steps, "--batch_size", batch, "--seq_length", "256", "--learning_rate", "1e-3",
            "--seed", str(args.seed), "--torch_threads", str(args.torch_threads), "--eval_samples", "200",
            "--eval_batch_size", "20", "--save_model_freq", rounds, "--output_dir", str(runs), "--run_name", method,
            *method_flags(method, args.settings)]


def client_scores(record: dict[str, Any], view: str, metric: str) -> dict[str, float]:
    """{client id: ``metric``} of one view in the final record."""
    return {client: float(scores[metric]) for client, scores in record[view].items()}


def group_scores(record: dict[str, Any], view: str, metric: str) -> dict[str, float]:
    """Each user group's score: the mean over the clients whose held-out set is that group's."""
    scores: dict[str, list[float]] = {}
    for values in record[view].values():
        for group in GROUPS:
            if f"{metric}/group={group}" in values:
                scores.setdefault(group, []).append(float(values[metric]))
    return {group: float(np.mean(values)) for group, values in scores.items()}


def summarise(record: dict[str, Any], row: Row, metric: str) -> dict[str, Any]:
    """One row's numbers from the final record of its run."""
    per_client = client_scores(record, row.view, metric)
    values = np.asarray(list(per_client.values()))
    return {"clients": per_client, "mean": float(values.mean()), "worst": float(values.min()),
            "best": float(values.max()), "std": float(values.std()),
            "groups": group_scores(record, row.view, metric)}


def render(table_name: str, rows: dict[str, dict[str, Any]], args: argparse.Namespace, model: str,
           minutes: dict[str, float | None]) -> str:
    """The markdown report: settings, the table, run times."""
    s = args.settings
    settings = (f"{s.eval_per_client} held-out examples per client drawn with its own mix; local fine-tuning "
                f"{s.personalize_steps} steps; Ditto λ {s.ditto_lambda:g}; IFCA K {s.ifca_clusters}; seed {args.seed}")
    lines = [f"Model `{model}`; {settings}.", ""]
    if table_name == "sentiment":
        b = SMOKE if args.smoke else FULL
        lines[0:0] = [f"`bundled/fin_sentiment`, Dirichlet split (alpha {b.dirichlet_alpha}) over {b.num_clients} "
                      f"clients by label, {b.sample_clients} per round, {b.num_rounds} rounds x {b.max_steps} local "
                      f"steps x batch {b.batch_size}, learning rate {b.learning_rate}."]
        lines += ["| Model scored on each client's set | mean accuracy (%) | worst client | best client | std |",
                  "|---|---|---|---|---|"]
        for label, r in rows.items():
            lines.append(f"| {label} | {100 * r['mean']:.1f} | {100 * r['worst']:.1f} | {100 * r['best']:.1f} | "
                         f"{100 * r['std']:.1f} |")
    else:
        flags = preferences_argv("fedavg", args, model, Path("runs"))

        def flag(name: str) -> str:
            return flags[flags.index(name) + 1]

        lines[0:0] = ["`bundled/style_preferences`, one client per user (10 users: 5 prefer concise answers, 5 "
                      f"detailed ones), 2 per round, {flag('--num_rounds')} rounds x {flag('--max_steps')} local "
                      f"steps x batch {flag('--batch_size')} pairs, learning rate {flag('--learning_rate')}; DPO, "
                      "β 0.1."]
        lines += ["| Model scored on each client's pairs | concise group (%) | detailed group (%) | worst group | "
                  "mean over clients | worst client |", "|---|---|---|---|---|---|"]
        for label, r in rows.items():
            groups = r["groups"]
            cells = [f"{100 * groups[g]:.1f}" if g in groups else "–" for g in GROUPS]
            worst_group = f"{100 * min(groups.values()):.1f}" if groups else "–"
            lines.append(f"| {label} | {' | '.join(cells)} | {worst_group} | {100 * r['mean']:.1f} | "
                         f"{100 * r['worst']:.1f} |")
    times = ", ".join(f"{m} {'reused' if t is None else f'{t:.1f} min'}" for m, t in minutes.items())
    lines += ["", f"Run wall times: {times}."]
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, Any]], metric: str, path: Path) -> None:
    """Each client's score under each row (a dot per client, the mean as a bar)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.5 + 0.45 * len(rows)), layout="constrained")
    ax = fig.subplots()
    for y, r in enumerate(rows.values()):
        values = [100 * v for v in r["clients"].values()]
        ax.scatter(values, [y] * len(values), s=14, alpha=0.7)
        ax.plot([100 * r["mean"]] * 2, [y - 0.3, y + 0.3], color="black", linewidth=2)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.removeprefix('eval_')} on each client's held-out set (%)")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> Path:
    """Train what is missing, then write results.md, results.json and per_client.png; return results.md."""
    args = parse_args(argv)
    out, model = prepare_output(args)
    table = TABLES[args.table]
    runs = out / "runs"
    make_argv = sentiment_argv if args.table == "sentiment" else preferences_argv
    rounds = num_rounds(args)
    finals: dict[str, dict[str, Any]] = {}
    minutes: dict[str, float | None] = {}
    for method in args.method_list:
        records, seconds = train_or_reuse(runs / method, make_argv(method, args, model, runs), rounds, args.fresh,
                                          lambda evaluate: evaluate, task=table.task)
        finals[method] = next(r for r in reversed(records) if r["round"] == rounds and "per_client" in r)
        minutes[method] = None if seconds is None else seconds / 60
    rows = {row.label: summarise(finals[row.method], row, table.metric) for row in table.rows if row.method in finals}
    report = render(args.table, rows, args, model, minutes)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps({"table": args.table, "model": model,
                                                  "settings": dataclasses.asdict(args.settings), "rows": rows},
                                                 indent=1))
    plot(rows, table.metric, out / "per_client.png")
    logger.info("wrote %s, results.json and per_client.png\n%s", out / "results.md", report)
    return out / "results.md"


if __name__ == "__main__":
    main()
