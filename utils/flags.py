"""Command-line parsing with argparse's conventions: one ``<prog>: error: <message>`` line and exit status 2.

TRL's ``TrlParser`` (dataclass flags, ``--config`` YAML defaults, CLI overrides) reports a bad flag by
calling ``error``; here that raises ``FlagError``, so a library caller gets an exception and a
command line prints one line (``fail``). Light to import: nothing here loads torch.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from trl import TrlParser


class FlagError(ValueError):
    """A flag or ``--config`` key that does not parse (unknown, or of the wrong type)."""


class FlagParser(TrlParser):
    """TRL's dataclass parser, raising ``FlagError`` on bad flags instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        """argparse calls this for a bad flag."""
        raise FlagError(message)


def fail(prog: str, message: str) -> NoReturn:
    """Report a bad input as one line on stderr and exit with status 2."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)
