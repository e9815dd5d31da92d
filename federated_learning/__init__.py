"""Federated fine-tuning of LLM adapters: types, aggregators and the round loop."""

from federated_learning.aggregators import Aggregator, ClientHook, available_aggregators, get_aggregator
from federated_learning.types import ClientUpdate, StateDict

__all__ = ["Aggregator", "ClientHook", "ClientUpdate", "StateDict", "available_aggregators", "get_aggregator"]
