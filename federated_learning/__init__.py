"""Federated fine-tuning of LLM adapters: the round loop, tasks, clients and aggregators.

``ClientUpdate``, ``StateDict`` and the aggregator API are re-exported here, loaded on first use so
that importing a submodule (the command line's parser, say) stays light.
"""

from __future__ import annotations

from typing import Any

import utils.quiet  # noqa: F401  (before PEFT/bitsandbytes load: silences known-harmless messages)

_EXPORTS = {
    "ClientUpdate": "federated_learning.types",
    "StateDict": "federated_learning.types",
    "Aggregator": "federated_learning.aggregators",
    "ClientAlgorithm": "federated_learning.aggregators",
    "ClientHook": "federated_learning.aggregators",
    "available_aggregators": "federated_learning.aggregators",
    "get_aggregator": "federated_learning.aggregators",
    "get_client_algorithm": "federated_learning.aggregators",
}


def __getattr__(name: str) -> Any:
    """The public names above, imported when first asked for."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
