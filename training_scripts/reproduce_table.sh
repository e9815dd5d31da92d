#!/usr/bin/env bash
# Local-only training vs FedAvg and six other FL algorithms on the bundled sentiment and arithmetic
# tasks (Dirichlet split), scored on their held-out test splits. Writes results.md, results.json and
# accuracy_vs_round.png to the output folder (default output/reproduce_table).
#
#   bash training_scripts/reproduce_table.sh                  # the full table, ~32 min on 2 quiet cores
#   bash training_scripts/reproduce_table.sh --smoke          # tiny random model: checks the pipeline
#   bash training_scripts/reproduce_table.sh --help           # budget overrides, task/method subsets
#
# Finished runs are reused, so an interrupted reproduction continues where it stopped (--fresh retrains).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" training_scripts/reproduce_table.py "$@"
