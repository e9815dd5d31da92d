"""Federated algorithms, one module each, named by its ``--fed_alg`` (helpers start with ``_``).

The registry functions load nothing heavy; the classes (and torch) load on first use.
"""

from __future__ import annotations

from typing import Any

from federated_learning.aggregators._registry import (
    FedAlg,
    available_aggregators,
    build_aggregator,
    build_client_algorithm,
    get_aggregator,
    get_client_algorithm,
    register,
    resolve_fed_alg,
)

_BASE_NAMES = ("Aggregator", "ClientAlgorithm", "ClientHook")


def __getattr__(name: str) -> Any:
    """The base classes, imported only when asked for (they import torch)."""
    if name in _BASE_NAMES:
        from federated_learning.aggregators import _base

        return getattr(_base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Aggregator",
    "ClientAlgorithm",
    "ClientHook",
    "FedAlg",
    "available_aggregators",
    "build_aggregator",
    "build_client_algorithm",
    "get_aggregator",
    "get_client_algorithm",
    "register",
    "resolve_fed_alg",
]
