"""Federated aggregation algorithms, one module each, registered by their ``--fed_alg`` name."""

# Importing a module registers its algorithm under its --fed_alg name.
from federated_learning.aggregators import (  # noqa: F401
    fedadagrad,
    fedadam,
    fedavg,
    fedavgm,
    fedprox,
    fedyogi,
    scaffold,
)
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
