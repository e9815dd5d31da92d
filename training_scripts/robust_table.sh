#!/usr/bin/env bash
# Poisoning table: FedAvg, FedMedian, FedTrimmedAvg, Krum, Multi-Krum and FedAvg with norm bounding when
# one client of five sends a scaled, sign-flipped or random update, on the bundled sentiment task.
# Writes results.md and results.json to the output folder (default output/robust_table).
#
#   bash training_scripts/robust_table.sh --torch_threads 1   # the table (24 runs)
#   bash training_scripts/robust_table.sh --smoke             # tiny random model: checks the pipeline
#   bash training_scripts/robust_table.sh --help              # rows, columns, attack scale, norm bound
#
# Finished runs are reused, so an interrupted run continues where it stopped (--fresh retrains).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" training_scripts/robust_table.py "$@"
