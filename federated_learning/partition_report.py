"""Describe a client partition: sizes, label histograms, a skew measure; logged, saved as JSON and PNG."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from utils.constants import PROMPT_CUT, SOURCE_ROW

logger = logging.getLogger(__name__)

REPORT_JSON = "partition.json"
REPORT_PNG = "partition.png"


def label_histograms(
    dataset: Dataset, partition: Sequence[np.ndarray], column: str
) -> tuple[list[str], np.ndarray]:
    """Labels (sorted, as text) and a clients x labels count matrix; no labels if ``dataset`` lacks ``column``.

    ``partition``: each client's row indices into ``dataset``.
    """
    if not partition or column not in dataset.column_names:
        return [], np.zeros((len(partition), 0), dtype=np.int64)
    labels, codes = np.unique(np.array([str(v) for v in dataset[column]]), return_inverse=True)
    counts = np.stack([np.bincount(codes[rows], minlength=len(labels)) for rows in partition]).astype(np.int64)
    return [str(label) for label in labels], counts


def mean_total_variation(counts: np.ndarray) -> float:
    """Mean over non-empty clients of the total-variation distance between its label mix and the pooled one.

    0 when every client has the pooled mix; 1 - 1/L when each client holds a single one of L
    balanced classes. A scalar measure of label skew.
    """
    totals = counts.sum(axis=1)
    keep = totals > 0
    if counts.shape[1] == 0 or not keep.any():
        return 0.0
    pooled = counts.sum(axis=0) / counts.sum()
    mixes = counts[keep] / totals[keep, None]
    return float(np.mean(0.5 * np.abs(mixes - pooled).sum(axis=1)))


def describe_partition(
    dataset: Dataset, partition: Sequence[np.ndarray], column: str, run_dir: str | Path
) -> dict[str, Any]:
    """Log each client's size and label histogram; write ``partition.json`` and ``partition.png`` to ``run_dir``.

    ``partition``: each client's row indices into ``dataset`` (``partition.partition_indices``).

    Returns the report written to JSON: ``sizes``, ``labels``, ``histograms`` (client -> label ->
    count, when the shards have ``column``), ``global_histogram`` and ``mean_total_variation``.
    """
    run_dir = Path(run_dir)
    labels, counts = label_histograms(dataset, partition, column)
    sizes = [len(rows) for rows in partition]
    report: dict[str, Any] = {
        "num_clients": len(partition),
        "num_examples": int(sum(sizes)),
        "column": column if labels else None,
        "sizes": sizes,
        "labels": labels,
        "histograms": [dict(zip(labels, map(int, row), strict=True)) for row in counts] if labels else [],
        "global_histogram": dict(zip(labels, map(int, counts.sum(axis=0)), strict=True)),
        "mean_total_variation": mean_total_variation(counts),
    }
    for cid, size in enumerate(sizes):
        histogram = " ".join(f"{k}={v}" for k, v in report["histograms"][cid].items()) if labels else ""
        logger.info("client %d: %d examples %s", cid, size, histogram)
    if labels:
        logger.info("label skew (mean total variation to the pooled %s mix): %.3f",
                    column, report["mean_total_variation"])
    else:
        logger.info("no %r column: partition report has sizes only", column)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REPORT_JSON).write_text(json.dumps(report, indent=1))
    plot_partition(labels, counts if labels else np.array(sizes)[:, None], column, run_dir / REPORT_PNG)
    return report


MAX_BARS = 100
"""Above this many clients the stacked bars become stacked steps: one shape per label, not per client."""


def plot_partition(labels: Sequence[str], counts: np.ndarray, column: str, path: Path) -> None:
    """A stacked bar chart: one bar per client, one colour per label (one plain bar without labels).

    With more than ``MAX_BARS`` clients each label is one filled step curve over the clients (the
    same stacked counts), so drawing costs the same for 10,000 clients as for 100 (a bar per client
    per label took ~100 MiB at 10,000 clients).
    """
    # The object-oriented API renders with Agg without touching pyplot's global backend state.
    from matplotlib.figure import Figure

    num_clients = counts.shape[0]
    fig = Figure(figsize=(min(16.0, 3.0 + 0.35 * num_clients), 4.0), layout="constrained")
    ax = fig.subplots()
    clients = np.arange(num_clients)
    bottom = np.zeros(num_clients)
    for j in range(counts.shape[1]):
        label = labels[j] if labels else None
        if num_clients > MAX_BARS:
            ax.stairs(bottom + counts[:, j], np.arange(num_clients + 1) - 0.5, baseline=bottom.copy(), fill=True,
                      label=label)
        else:
            ax.bar(clients, counts[:, j], bottom=bottom, label=label, width=0.8)
        bottom += counts[:, j]
    ax.set_xlabel("client")
    ax.set_ylabel("training examples")
    ax.set_title(f"Client partition by {column}" if labels else "Client partition (sizes)")
    if num_clients <= 40:
        ax.set_xticks(clients)
    if labels:
        ax.legend(title=column, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=100)


def tokenization_report(prepared: Dataset, partition: Sequence[np.ndarray], num_rows: int) -> list[dict[str, int]]:
    """Per client: rows, rows kept, of those how many had their prompt cut, and rows left out by tokenisation.

    ``prepared`` is the tokenisation of the ``num_rows`` training rows, with the ``SOURCE_ROW`` and
    ``PROMPT_CUT`` columns a tokeniser adds when it leaves rows out or cuts prompts (utils.truncation).
    """
    if SOURCE_ROW in prepared.column_names:
        position = np.full(num_rows, -1, dtype=np.int64)
        position[np.asarray(prepared[SOURCE_ROW], dtype=np.int64)] = np.arange(len(prepared))
    else:
        position = np.arange(num_rows, dtype=np.int64)
    cut = (np.asarray(prepared[PROMPT_CUT], dtype=bool) if PROMPT_CUT in prepared.column_names
           else np.zeros(len(prepared), dtype=bool))
    report = []
    for rows in partition:
        kept = position[rows]
        kept = kept[kept >= 0]
        report.append({"rows": int(len(rows)), "kept": int(len(kept)), "prompt_cut": int(cut[kept].sum()),
                       "dropped": int(len(rows) - len(kept))})
    return report


def record_tokenization(run_dir: str | Path, report: Sequence[dict[str, int]], seq_length: int) -> None:
    """Add the per-client tokenisation counts to ``partition.json``; log those of clients with cut or left-out rows."""
    path = Path(run_dir) / REPORT_JSON
    data = json.loads(path.read_text()) if path.exists() else {}
    data["tokenization"] = {"seq_length": seq_length, "clients": list(report)}
    path.write_text(json.dumps(data, indent=1))
    touched = [(cid, r) for cid, r in enumerate(report) if r["prompt_cut"] or r["dropped"]]
    for cid, r in touched:
        logger.info("client %d: %d of %d rows kept, %d with the prompt cut, %d left out by --seq_length %d",
                    cid, r["kept"], r["rows"], r["prompt_cut"], r["dropped"], seq_length)
