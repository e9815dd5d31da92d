"""Federated fine-tuning of LLM adapters: types, aggregators and the round loop."""

import utils.quiet  # noqa: F401  (before PEFT/bitsandbytes load: silences known-harmless messages)
from federated_learning.aggregators import Aggregator, ClientHook, available_aggregators, get_aggregator
from federated_learning.types import ClientUpdate, StateDict

__all__ = ["Aggregator", "ClientHook", "ClientUpdate", "StateDict", "available_aggregators", "get_aggregator"]
