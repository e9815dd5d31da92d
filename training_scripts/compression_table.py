"""Accuracy per megabyte: FedAvg on a bundled non-IID task with each codec, scored against the bytes it sent.

The reproduction table's split and budget (``reproduce_table.py``: Dirichlet alpha 0.5 over 10
clients, 2 per round, 6 rounds x 5 local steps), one run per variant:

* ``none``: FedAvg as it is (float32 both ways);
* ``bf16``: bfloat16 both ways; ``int8``: int8 with per-row scales both ways;
* ``topk-10`` / ``topk-1``: top-k of 10% / 1% of each tensor's update, with error feedback, up
  (the start state goes down uncompressed: top-k needs a residual, which a whole state has not);
* ``ffa_lora``: FFA-LoRA, which sends only B (A frozen), with no codec.

The round loop scores the global adapter on the held-out test split every ``--eval_every``
rounds (by default the reproduction table's 3: ``none`` and ``ffa_lora`` then train exactly the
runs of that table and of the LoRA-aware one, whose folders can be linked in as
``<output_dir>/runs/none`` and ``runs/ffa_lora`` instead of training them again);
``metrics.jsonl`` holds every client-round's bytes up and down, as encoded. The script writes
``results.md`` (final score, MB up / down / total, MB until the score first reached
``--target``), ``results.json`` and ``accuracy_vs_mb.png`` (score against cumulative MB).
Finished runs are reused (``--fresh`` retrains).

    .venv/bin/python training_scripts/compression_table.py --torch_threads 1   # sentiment (see --help)
    .venv/bin/python training_scripts/compression_table.py --smoke             # tiny model, ~1 minute
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training_scripts.reproduce_table import (  # noqa: E402
    FULL,
    SMOKE,
    TASKS,
    eval_curve,
    final_eval,
    prepare_output,
    run_argv,
    shared_base_scores,
    train_or_reuse,
)

logger = logging.getLogger("compression_table")

VARIANTS: dict[str, tuple[str, list[str]]] = {  # name -> (--fed_alg, codec flags)
    "none": ("fedavg", []),
    "bf16": ("fedavg", ["--upload_codec", "bf16", "--download_codec", "bf16"]),
    "int8": ("fedavg", ["--upload_codec", "int8", "--int8_scale", "row", "--download_codec", "int8"]),
    "topk-10": ("fedavg", ["--upload_codec", "topk", "--topk_fraction", "0.1"]),
    "topk-1": ("fedavg", ["--upload_codec", "topk", "--topk_fraction", "0.01"]),
    "ffa_lora": ("ffa_lora", []),
}
DESCRIPTIONS = {
    "none": "FedAvg, float32 up and down", "bf16": "FedAvg, bf16 up and down",
    "int8": "FedAvg, int8 (per-row scales) up and down", "topk-10": "FedAvg, top-10% up (error feedback)",
    "topk-1": "FedAvg, top-1% up (error feedback)", "ffa_lora": "FFA-LoRA (B only), float32",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags: output folder, model, task, variants, target score, threads, and the evaluation cadence."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="output/compression_table", help="runs go to <dir>/runs/<variant>")
    parser.add_argument("--model_name_or_path", default=None,
                        help="default: 'embedded' (with --smoke: a tiny random model built in <output_dir>)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and budget: check the pipeline quickly")
    parser.add_argument("--task", default="sentiment", choices=sorted(TASKS))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--target", type=float, default=0.7,
                        help="the headline score (a fraction) whose first crossing the MB-to-target column reports")
    parser.add_argument("--eval_every", type=int, default=None,
                        help="default: the reproduction table's (3; 1 with --smoke), so that its FedAvg and FFA-LoRA "
                             "runs are the same runs; 1 draws a finer curve")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--torch_threads", type=int, default=0, help="0: one per available CPU")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--variants: unknown or empty {unknown}; choose from {', '.join(VARIANTS)}")
    args.variant_list = names
    budget = SMOKE if args.smoke else FULL
    args.budget = dataclasses.replace(budget, eval_every=args.eval_every or budget.eval_every)
    if not 0 < args.target <= 1:
        raise SystemExit(f"--target is a fraction in (0, 1], got {args.target}")
    return args


def mb_curve(records: Sequence[dict[str, Any]], metric: str) -> list[tuple[float, float]]:
    """(cumulative MB up + down after that round, score) at every evaluation; the untrained model at 0 MB."""
    spent, total = {0: 0.0}, 0.0
    for record in records:
        if "client_metrics" in record:
            total += sum(m.get("bytes_uploaded", 0) + m.get("bytes_downloaded", 0)
                         for m in record["client_metrics"].values())
            spent[int(record["round"])] = total / 1e6
    return [(spent[rnd], value) for rnd, value in eval_curve(records, metric)]


def mb_to_target(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """The cumulative MB at the first evaluation scoring at least ``target`` (None: never reached)."""
    return next((mb for mb, value in curve if value >= target), None)


def summarise(records: Sequence[dict[str, Any]], metric: str, num_rounds: int, target: float) -> dict[str, Any]:
    """One variant's row: final score, MB up / down / total, MB to the target, and its curve."""
    uploaded = sum(m.get("bytes_uploaded", 0) for r in records for m in r.get("client_metrics", {}).values())
    downloaded = sum(m.get("bytes_downloaded", 0) for r in records for m in r.get("client_metrics", {}).values())
    curve = mb_curve(records, metric)
    final = final_eval(records, num_rounds) or {}
    return {"final": final.get(metric), "mb_uploaded": uploaded / 1e6, "mb_downloaded": downloaded / 1e6,
            "mb_total": (uploaded + downloaded) / 1e6, "mb_to_target": mb_to_target(curve, target), "curve": curve}


def render(rows: dict[str, dict[str, Any]], args: argparse.Namespace, metric: str, model: str, seconds: float) -> str:
    """The markdown report: settings line, the table, and the total training time."""
    b = args.budget
    task = TASKS[args.task]
    lines = [
        f"Model `{model}`; `{task.dataset}`, Dirichlet split (alpha {b.dirichlet_alpha}) of {b.dataset_sample} "
        f"training rows over {b.num_clients} clients by {task.partition_column}, {b.sample_clients} per round, "
        f"{b.num_rounds} rounds x {b.max_steps} local steps x batch {b.batch_size}, learning rate "
        f"{b.learning_rate} (cosine over rounds), seed {args.seed}; scored on {b.eval_samples} held-out rows every "
        f"{b.eval_every} rounds. MB = 10^6 bytes of what the codecs send (the parts' data), summed over the run's "
        f"client-rounds.",
        "",
        f"| Variant | {metric.removeprefix('eval_')} (final, %) | MB up | MB down | MB total | "
        f"MB until {100 * args.target:.0f}% |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        final = "–" if row["final"] is None else f"{100 * row['final']:.1f}"
        reach = "not reached" if row["mb_to_target"] is None else f"{row['mb_to_target']:.2f}"
        lines.append(f"| {name}: {DESCRIPTIONS[name]} | {final} | {row['mb_uploaded']:.2f} | "
                     f"{row['mb_downloaded']:.2f} | {row['mb_total']:.2f} | {reach} |")
    lines += ["", f"Wall time of the runs trained now: {seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, Any]], metric: str, target: float, path: Path) -> None:
    """Score against cumulative MB (log scale), one line per variant, the target dotted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, row in rows.items():
        points = [(mb, 100 * v) for mb, v in row["curve"] if mb > 0]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
    ax.axhline(100 * target, linestyle=":", color="0.5")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative MB sent (up + down)")
    ax.set_ylabel(f"held-out {metric.removeprefix('eval_')} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> Path:
    """Train what is missing, then write results.md, results.json and accuracy_vs_mb.png; return results.md."""
    args = parse_args(argv)
    out, model = prepare_output(args)
    task = TASKS[args.task]
    metric = task.metrics[0]
    cache: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for name in args.variant_list:
        fed_alg, flags = VARIANTS[name]
        argv_ = [*run_argv(task, fed_alg, args.budget, model, out / "runs", args.seed, args.torch_threads),
                 "--output_dir", str(out / "runs"), "--run_name", name, *flags]
        records, _ = train_or_reuse(out / "runs" / name, argv_, args.budget.num_rounds, args.fresh,
                                    shared_base_scores(cache, task.dataset))
        rows[name] = summarise(records, metric, args.budget.num_rounds, args.target)
    report = render(rows, args, metric, model, time.perf_counter() - start)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps({"budget": dataclasses.asdict(args.budget), "model": model,
                                                  "task": args.task, "target": args.target, "rows": rows}, indent=1))
    plot(rows, metric, args.target, out / "accuracy_vs_mb.png")
    logger.info("wrote %s, results.json and accuracy_vs_mb.png\n%s", out / "results.md", report)
    return out / "results.md"


if __name__ == "__main__":
    main()
