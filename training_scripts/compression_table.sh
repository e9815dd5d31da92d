#!/usr/bin/env bash
# Accuracy per megabyte: FedAvg with each codec (none, bf16, int8, top-k 10% / 1%) and FFA-LoRA on the
# bundled sentiment task's non-IID split. Writes results.md, results.json and accuracy_vs_mb.png to the
# output folder (default output/compression_table).
#
#   bash training_scripts/compression_table.sh --torch_threads 1   # the table (6 runs)
#   bash training_scripts/compression_table.sh --smoke             # tiny random model: checks the pipeline
#   bash training_scripts/compression_table.sh --help              # task, variants, target, evaluation cadence
#
# Finished runs are reused, so an interrupted run continues where it stopped (--fresh retrains).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" training_scripts/compression_table.py "$@"
