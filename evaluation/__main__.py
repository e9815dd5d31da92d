"""``python -m evaluation``: see ``evaluation/cli.py``."""

from evaluation.cli import main

if __name__ == "__main__":
    main()
