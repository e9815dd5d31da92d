"""Federated aggregation algorithms, one module each, registered by their ``--fed_alg`` name."""

from federated_learning.aggregators import fedavg  # noqa: F401  (registers itself)
from federated_learning.aggregators.base import Aggregator, ClientHook
from federated_learning.aggregators.registry import (
    available_aggregators,
    get_aggregator,
    local_client,
    register,
    validate_fed_alg,
)

__all__ = [
    "Aggregator",
    "ClientHook",
    "available_aggregators",
    "get_aggregator",
    "local_client",
    "register",
    "validate_fed_alg",
]
