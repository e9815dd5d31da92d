"""The report of ``reproduce_table.py``: the markdown table, the check of the paper's claim, the curves.

Every number comes from the runs' own files (metrics.jsonl, partition.json, the final checkpoint),
as ``reproduce_table.train_one`` collected them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training_scripts.reproduce_table import Budget, BundledTask

DISPLAY_NAMES = {
    "fedavg": "FedAvg", "fedprox": "FedProx", "scaffold": "SCAFFOLD", "fedavgm": "FedAvgM",
    "fedadagrad": "FedAdagrad", "fedyogi": "FedYogi", "fedadam": "FedAdam", "ffa_lora": "FFA-LoRA",
    "fedsa_lora": "FedSA-LoRA", "flora": "FLoRA", "flexlora": "FlexLoRA", "fedex_lora": "FedEx-LoRA",
    "rolora": "RoLoRA", "hetlora": "HetLoRA",
}
METRIC_NAMES = {"eval_accuracy": "accuracy", "eval_macro_f1": "macro-F1", "eval_exact_match": "exact match"}


def lora_b_norm(checkpoint: Path) -> float:
    """Frobenius norm of all LoRA B matrices of a saved adapter, together."""
    from safetensors.torch import load_file

    tensors = load_file(str(checkpoint / "adapter_model.safetensors"))
    return float(sum(t.double().square().sum() for key, t in tensors.items() if "lora_B" in key) ** 0.5)


def per_round_bytes(records: Sequence[dict[str, Any]], direction: str) -> float | None:
    """Mean over rounds of the bytes the round's accepted clients ``direction`` ("uploaded"/"downloaded") together."""
    totals = [sum(m.get(f"bytes_{direction}", 0.0) for m in r["client_metrics"].values())
              for r in records if r.get("client_metrics")]
    return sum(totals) / len(totals) if totals else None


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
                    budget: Budget, model: str, seed: int, total_seconds: float, ranks: str | None = None) -> str:
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
        "split (unseen templates, companies and operand pairs), greedy decoding. LoRA rank 8"
        + (f"; client LoRA ranks {ranks} (cycled over client ids)." if ranks else " for every client."),
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
    lines += ["", *norm_table(results, tasks, methods), "", *bytes_table(results, tasks, methods)]
    return "\n".join(lines) + "\n"


def bytes_table(results: dict[str, dict[str, dict[str, Any]]], tasks: Sequence[BundledTask],
                methods: Sequence[str]) -> list[str]:
    """What a round moves: the bytes its sampled clients uploaded and downloaded together (metrics.jsonl)."""
    labels = [DISPLAY_NAMES.get(m, f"local {m[5:]}" if m.startswith("local") else m) for m in methods]
    lines = ["Communication per round (MB uploaded / downloaded by the round's clients together, mean over rounds):",
             "", "| MB | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for task in tasks:
        runs = results.get(task.name, {})
        cells = []
        for method in methods:
            moved = runs.get(method, {}).get("bytes_per_round") or {}
            up, down = moved.get("uploaded"), moved.get("downloaded")
            cells.append("–" if up is None or down is None else f"{up / 1e6:.2f} / {down / 1e6:.2f}")
        lines.append(f"| {task.name} | " + " | ".join(cells) + " |")
    return lines


def norm_table(results: dict[str, dict[str, dict[str, Any]]], tasks: Sequence[BundledTask],
               methods: Sequence[str]) -> list[str]:
    """How far training moved each run's adapter: the Frobenius norm of its final LoRA B (B starts at zero)."""
    labels = [DISPLAY_NAMES.get(m, f"local {m[5:]}" if m.startswith("local") else m) for m in methods]
    lines = ["Final LoRA B of every run (Frobenius norm over all its B matrices; B starts at zero, so this is how "
             "far training moved it):", "", "| ‖B‖ | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for task in tasks:
        runs = results.get(task.name, {})
        values = [f"{runs[m]['lora_b_norm']:.2f}" if runs.get(m, {}).get("lora_b_norm") is not None else "–"
                  for m in methods]
        lines.append(f"| {task.name} | " + " | ".join(values) + " |")
    return lines


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
