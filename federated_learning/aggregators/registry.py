"""Name -> aggregator class registry behind ``--fed_alg``."""

from __future__ import annotations

import re
from typing import Any

from federated_learning.aggregators.base import Aggregator

_REGISTRY: dict[str, type[Aggregator]] = {}
LOCAL_ALG = re.compile(r"^local(\d+)$")


def register(cls: type[Aggregator]) -> type[Aggregator]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"aggregator name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_aggregators() -> list[str]:
    """Registered ``--fed_alg`` names, sorted."""
    return sorted(_REGISTRY)


def local_client(fed_alg: str) -> int | None:
    """The client K of the local-only baseline ``local<K>``, or None for a federated algorithm."""
    match = LOCAL_ALG.match(fed_alg)
    return int(match.group(1)) if match else None


def validate_fed_alg(fed_alg: str) -> None:
    """Raise a ValueError naming the valid choices if ``fed_alg`` is unknown."""
    if fed_alg not in _REGISTRY and local_client(fed_alg) is None:
        raise ValueError(
            f"--fed_alg {fed_alg!r} is unknown. Valid: {', '.join(available_aggregators())}, "
            "or local<K> (train only client K, e.g. local0)."
        )


def get_aggregator(name: str, **hyperparameters: Any) -> Aggregator:
    """Build the aggregator registered as ``name``; ``local<K>`` trains one client, so it is FedAvg.

    Hyperparameters use the CLI flag names; those an algorithm does not use are ignored.
    """
    validate_fed_alg(name)
    cls = _REGISTRY["fedavg"] if local_client(name) is not None else _REGISTRY[name]
    return cls(**hyperparameters)
