"""Process setup shared by every entry point (simulation, Flower ServerApp and ClientApp): logging and threads."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging() -> None:
    """One concise log format (cheap: call it first, before any check and before tqdm is imported).

    Off a terminal (CI, ``nohup``, ``> log``) every tqdm bar is off (``TQDM_DISABLE``, which tqdm reads
    when it is imported): their redraws would flood the log, and the round log line says the same.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def quiet_progress_bars() -> None:
    """Turn off the libraries' per-call progress bars (imports datasets and transformers: call it after the checks)."""
    import datasets
    import transformers

    # Per-call progress bars of weight loading and dataset maps would interleave with the round bar.
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def set_threads(requested: int) -> int:
    """Use ``requested`` intra-op threads, or one per CPU this process may run on (``os.sched_getaffinity``)."""
    import torch

    threads = requested if requested > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads
