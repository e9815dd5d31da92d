"""A Flower run config turned into the framework's own ``RunConfig``.

A run config holds flat scalars declared in ``[tool.flwr.app.config]`` of pyproject.toml, and
``flwr run --run-config`` may only override keys declared there. Rather than mirror every flag
as a key (a second list of names and defaults to keep in sync with config.py), the run config
carries the command line itself: ``mode`` names the task (``sft``: main_sft.py's, ``dpo``:
main_dpo.py's, or any registered task), ``args`` holds its flags exactly as its script takes them
and ``config`` a YAML file of flags, as its ``--config``. Both go through the task's own parser
(``federated_learning.cli``), so every flag, default and check is the simulation's.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import RunConfig
from federated_learning.cli import parse_run
from federated_learning.tasks import available_tasks

APP_DIR = Path(__file__).resolve().parent.parent
"""The app's root: the repository, or the unpacked app bundle on a SuperLink / SuperNode."""

ARGS = "args"
CONFIG = "config"
NODE_TIMEOUT = "node-timeout"
ROUND_TIMEOUT = "round-timeout"
MODE = "mode"


@dataclass(frozen=True)
class RunSettings:
    """Everything a Flower run needs to know, on the server and on every client alike."""

    cfg: RunConfig  # the task (run config "mode") and its flags
    node_timeout: float  # seconds the server waits for all --num_clients SuperNodes to connect
    round_timeout: float | None  # seconds to wait for a round's replies (None: as long as it takes)


def _seconds(run_config: Mapping[str, Any], key: str, default: float) -> float:
    value = run_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"run config {key}={value!r} must be a number of seconds >= 0")
    return float(value)


def parse_run_config(run_config: Mapping[str, Any], app_dir: Path = APP_DIR) -> RunSettings:
    """Parse a run config; raise ValueError naming the key and the fix.

    ``config`` is a YAML path; relative paths are resolved against ``app_dir`` (YAML files travel
    in the app bundle). Paths inside the flags (model, data, output) are paths on the machine
    that reads them: the server's for ``--output_dir``, each SuperNode's for model and data.
    """
    mode = str(run_config.get(MODE, "sft") or "sft")
    tasks = available_tasks()
    if mode not in tasks:
        raise ValueError(f"run config {MODE}={mode!r} is unknown; use one of the tasks: {', '.join(tasks)}")
    argv: list[str] = []
    config_file = str(run_config.get(CONFIG, "") or "")
    if config_file:
        path = Path(config_file).expanduser()
        path = path if path.is_absolute() else app_dir / path
        if not path.is_file():
            raise ValueError(f"run config {CONFIG}={config_file!r}: no such YAML file (looked at {path})")
        argv += ["--config", str(path)]
    try:
        argv += shlex.split(str(run_config.get(ARGS, "") or ""))
    except ValueError as err:
        raise ValueError(f"run config {ARGS}=... is not a valid command line ({err}); check its quotes") from err
    try:
        cfg = parse_run(mode, argv, prog=f"run config {ARGS}")
    except ValueError as err:
        raise ValueError(f"run config {ARGS}={run_config.get(ARGS)!r}: {err}") from err
    round_timeout = _seconds(run_config, ROUND_TIMEOUT, 0.0)
    return RunSettings(cfg, _seconds(run_config, NODE_TIMEOUT, 300.0), round_timeout or None)
