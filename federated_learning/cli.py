"""The command line of every entry point: flags (and ``--config`` YAML) -> ``RunConfig``, errors as one line.

``python main_sft.py --no_such_flag`` answers ``main_sft.py: error: unrecognized argument
--no_such_flag`` (with the closest valid flag when there is one) and exit status 2, as argparse
does, and so does any bad input found before training starts (a flag out of range, a missing
file, an unreadable checkpoint). Tracebacks are for bugs; ``FEDLLM_TRACEBACK=1`` shows one for a
bad input too. Nothing heavy is imported before the flags are checked, so ``--help`` and these
errors answer in well under two seconds.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from trl import TrlParser

from config import FedArguments, RunConfig, ScriptArguments
from federated_learning.tasks import get_task

TRACEBACK_ENV = "FEDLLM_TRACEBACK"


class FlagError(ValueError):
    """A flag or ``--config`` key that does not parse (unknown, or of the wrong type)."""


class FlagParser(TrlParser):
    """TRL's dataclass parser (``--config`` YAML defaults, CLI overrides), raising ``FlagError`` on bad flags."""

    def error(self, message: str) -> NoReturn:
        """argparse calls this for a bad flag; the command line prints it as one line (``command_line``)."""
        raise FlagError(message)


def fail(prog: str, message: str) -> NoReturn:
    """Report a bad input as one line on stderr and exit with status 2."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def _unknown(strings: Sequence[str], valid: Sequence[str], where: str) -> str:
    """A message for unknown ``--name`` strings, with the closest valid name where one is close."""
    names = [s[2:] for s in strings if s.startswith("--")] or list(strings)
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, valid, n=1)
        parts.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return f"{where} {', '.join(parts)}; every flag: --help"


def parse_run(task_name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> RunConfig:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into the task's ``RunConfig``; a bad flag raises ``FlagError``."""
    task = get_task(task_name)
    sections = [ScriptArguments, FedArguments, *([task.config_class] if task.config_class else [])]
    parser = FlagParser(sections, prog=prog)
    parser.set_defaults(**task.defaults)
    args = list(sys.argv[1:] if argv is None else argv)
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
