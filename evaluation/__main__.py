"""``python -m evaluation``: see ``evaluation/cli.py``."""

from evaluation.cli import command_line

if __name__ == "__main__":
    command_line()
