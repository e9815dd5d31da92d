"""A Flower run config turned into the framework's own ``ScriptArguments`` / ``FedArguments``.

A run config holds flat scalars declared in ``[tool.flwr.app.config]`` of pyproject.toml, and
``flwr run --run-config`` may only override keys declared there. Rather than mirror every flag
as a key (a second list of names and defaults to keep in sync with config.py), the run config
carries the command line itself: ``args`` holds flags exactly as ``main_sft.py`` (``mode = "sft"``)
or ``main_dpo.py`` (``mode = "dpo"``) takes them and ``config`` a YAML file of flags, as their
``--config``. Both go through that script's parser, so every flag, default and check is the
simulation's.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import FedArguments, ScriptArguments, parse_args

APP_DIR = Path(__file__).resolve().parent.parent
"""The app's root: the repository, or the unpacked app bundle on a SuperLink / SuperNode."""

ARGS = "args"
CONFIG = "config"
NODE_TIMEOUT = "node-timeout"
ROUND_TIMEOUT = "round-timeout"
MODE = "mode"
MODES = ("sft", "dpo")


@dataclass(frozen=True)
class RunSettings:
    """Everything a Flower run needs to know, on the server and on every client alike."""

    script_args: ScriptArguments
    fed_args: FedArguments
    mode: str  # "sft" (main_sft.py) or "dpo" (main_dpo.py)
    dpo_args: Any  # main_dpo.DPOArguments with mode "dpo", else None
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
    if mode not in MODES:
        raise ValueError(f"run config {MODE}={mode!r} is unknown; use sft (main_sft.py) or dpo (main_dpo.py)")
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
    dpo_args = None
    try:
        if mode == "dpo":
            from main_dpo import parse_dpo_args

            script_args, fed_args, dpo_args = parse_dpo_args(argv)
        else:
            script_args, fed_args = parse_args(argv)
    except SystemExit as err:  # argparse reports bad values by exiting, after printing the reason
        raise ValueError(f"run config {ARGS}={run_config.get(ARGS)!r} has an invalid flag value (see above)") from err
    except ValueError as err:
        script = f"main_{mode}.py"
        raise ValueError(f"run config {ARGS}: {err}; the flags are {script}'s (python {script} --help)") from err
    round_timeout = _seconds(run_config, ROUND_TIMEOUT, 0.0)
    return RunSettings(
        script_args, fed_args, mode, dpo_args, _seconds(run_config, NODE_TIMEOUT, 300.0), round_timeout or None
    )
