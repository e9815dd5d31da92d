"""The side-by-side results table: one row per benchmark metric, one column per model."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path

Table = Mapping[str, Mapping[str, Mapping[str, float]]]  # model -> benchmark -> metric -> value


def table_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header (``benchmark``, ``metric``, one column per model) and rows, in first-seen order."""
    models = list(table)
    keys: list[tuple[str, str]] = []
    for per_model in table.values():
        for bench, metrics in per_model.items():
            for metric in metrics:
                if (bench, metric) not in keys:
                    keys.append((bench, metric))
    rows = [[bench, metric, *(_format(table[m].get(bench, {}).get(metric)) for m in models)] for bench, metric in keys]
    return ["benchmark", "metric", *models], rows


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(table: Table, output: Path) -> None:
    """Write ``results.md``, ``results.csv`` and ``results.json`` under ``output``."""
    header, rows = table_rows(table)
    (output / "results.md").write_text(to_markdown(header, rows))
    with open(output / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    (output / "results.json").write_text(json.dumps(table, indent=1))
