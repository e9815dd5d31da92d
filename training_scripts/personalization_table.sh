#!/usr/bin/env bash
# Every client's own view: FedAvg's global adapter against local fine-tuning, FedSA-LoRA, Ditto and IFCA,
# each scored on every client's held-out set (mean, worst and best client). Two tables: --table sentiment
# (SFT, bundled non-IID sentiment task) and --table preferences (DPO, users with conflicting preferences).
# Writes results.md, results.json and per_client.png to output/personalization_table/<table>.
#
#   bash training_scripts/personalization_table.sh --table sentiment --torch_threads 1
#   bash training_scripts/personalization_table.sh --table preferences --torch_threads 1
#   bash training_scripts/personalization_table.sh --table sentiment --smoke   # tiny random model
#
# Finished runs are reused, so an interrupted run continues where it stopped (--fresh retrains).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" training_scripts/personalization_table.py "$@"
