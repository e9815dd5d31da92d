"""Logging inside the ServerApp / ClientApp processes."""

from __future__ import annotations

import logging

from federated_learning.process import quiet_progress_bars, setup_logging


def setup_flower_logging() -> None:
    """The framework's log format, without Flower's transport chatter.

    Flower's HTTP client logs every request at INFO (several per second while a round runs), and
    Flower's own logger has its handler already: letting it propagate would print each line twice.
    """
    setup_logging()
    quiet_progress_bars()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("flwr").propagate = False
