"""The command line of every entry point: flags (and ``--config`` YAML) -> ``RunConfig``, errors as one line.

``python main_sft.py --no_such_flag`` answers ``main_sft.py: error: unrecognized argument
--no_such_flag`` (with the closest valid flag when there is one) and exit status 2, as argparse
does, and so does any bad input found before training starts (a flag out of range, a missing
file, an unreadable checkpoint). Tracebacks are for bugs; ``FEDLLM_TRACEBACK=1`` shows one for a
bad input too. Nothing heavy is imported before the flags are checked, so ``--help`` and these
errors answer in well under two seconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from config import FedArguments, RunConfig, ScriptArguments
from federated_learning.tasks import get_task
from utils.flags import FlagError, FlagParser, fail

TRACEBACK_ENV = "FEDLLM_TRACEBACK"


def _unknown(strings: Sequence[str], valid: Sequence[str], where: str) -> str:
    """A message for unknown ``--name`` strings, with the closest valid name where one is close."""
    names = [s[2:] for s in strings if s.startswith("--")] or list(strings)
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, valid, n=1)
        parts.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return f"{where} {', '.join(parts)}; every flag: --help"


def _type_problem(value: object, hint: object) -> str | None:
    """Why ``value`` is not of the annotated flag type ``hint`` (None: it is). YAML values reach the dataclasses
    without argparse's conversion, so a ``num_rounds: 1.5`` must be caught here."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        return None if type(None) in allowed else "may not be empty"
    for kind in allowed:
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind in (str, bool) and isinstance(value, kind):
            return None
    names = " or ".join("empty" if kind is type(None) else kind.__name__ for kind in allowed)
    return f"is {value!r}, not {names}"


def _check_types(section: object, where: str) -> None:
    """Raise ``FlagError`` for a value of the wrong type; make whole numbers given to float flags floats."""
    hints = typing.get_type_hints(type(section))
    for spec in dataclasses.fields(section):
        value = getattr(section, spec.name)
        problem = _type_problem(value, hints[spec.name])
        if problem is not None:
            raise FlagError(f"{where}{spec.name} {problem}")
        if hints[spec.name] is float and isinstance(value, int):
            setattr(section, spec.name, float(value))


def parse_run(task_name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> RunConfig:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into the task's ``RunConfig``; a bad flag raises ``FlagError``."""
    task = get_task(task_name)
    sections = [ScriptArguments, FedArguments, *([task.config_class] if task.config_class else [])]
    parser = FlagParser(sections, prog=prog)
    unknown_defaults = sorted(set(task.defaults) - {action.dest for action in parser._actions})
    if unknown_defaults:
        raise ValueError(f"task {task_name}: defaults for flags that do not exist: {', '.join(unknown_defaults)}")
    parser.set_defaults(**task.defaults)
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[-1] == "--config":
        parser.error("--config needs a YAML file, e.g. --config training_scripts/configs/sft_default.yaml")
    try:
        *parsed, from_yaml, from_cli = parser.parse_args_and_config(
            args, return_remaining_strings=True, separate_remaining_strings=True
        )
    except FlagError:
        raise
    except (OSError, ValueError) as err:  # --config: a missing file, or not a YAML mapping
        parser.error(f"--config: {err}")
    except Exception as err:  # yaml.YAMLError: imported by TRL only when a --config is given
        if type(err).__module__.startswith("yaml"):
            parser.error(f"--config: not valid YAML ({err})".replace("\n", " "))
        raise
    valid = sorted(action.dest for action in parser._actions if action.dest != "help")
    if from_cli:
        parser.error(_unknown(from_cli, valid, "unrecognized argument(s)"))
    if from_yaml:
        parser.error(_unknown(from_yaml, valid, "--config: unknown key(s)"))
    for section in parsed:
        _check_types(section, "--config: " if "--config" in args else "--")
    return RunConfig(task_name, *parsed[:2], parsed[2] if len(parsed) > 2 else None)


def run_task(task_name: str, argv: Sequence[str] | None = None) -> Path:
    """Parse the flags and run the task in this process; return the run folder (bad input: ValueError)."""
    from federated_learning.run import run

    return run(parse_run(task_name, argv))


def command_line(task_name: str, argv: Sequence[str] | None = None) -> Path:
    """``python main_<task>.py ...``: like ``run_task``, with every bad input reported as one line, exit status 2."""
    from federated_learning.run import execute, prepare

    prog = Path(sys.argv[0]).name
    try:
        prepared = prepare(parse_run(task_name, argv, prog))
    except (ValueError, OSError) as err:  # before the first round, these are the input's, not bugs
        if os.environ.get(TRACEBACK_ENV):
            raise
        fail(prog, str(err))
    return execute(prepared)
