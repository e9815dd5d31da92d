"""What a SuperNode says about itself: ``--node-config`` keys, parsed and checked.

Kept free of heavy imports: the ClientApp's query handler reads it in a fresh process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DATA_PATH = "data-path"
MODEL_PATH = "model-path"
KNOWN_KEYS = (PARTITION_ID, NUM_PARTITIONS, DATA_PATH, MODEL_PATH)
EXAMPLE = "--node-config 'partition-id=0 num-partitions=2'"
IDENTITY = "node"
"""Name of the config record holding ``partition-id`` in a SuperNode's reply to the server's query."""
OWN_DATA = "own-data"
"""In the same record: whether the node trains on its own ``data-path`` (not its shard of the run's dataset)."""


def _int(node_config: Mapping[str, Any], key: str) -> int | None:
    value = node_config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"SuperNode --node-config {key}={value!r} must be an integer, e.g. {EXAMPLE}")
    return value


def _path(node_config: Mapping[str, Any], key: str) -> str | None:
    value = node_config.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"SuperNode --node-config {key}={value!r} must be a quoted path, e.g. {key}=\"/data/x\"")
    return value


@dataclass(frozen=True)
class NodeSettings:
    """One SuperNode's identity and local resources.

    ``partition_id`` is the client id this node trains as (the server samples client ids). Its data
    is either shard ``partition_id`` of the run's dataset split into ``num_partitions`` shards (the
    same split as the simulation), or, with ``data_path``, a local file or folder of its own.
    ``model_path`` points at this machine's copy of the base model when it differs from the run's
    ``--model_name_or_path``.
    """

    partition_id: int
    num_partitions: int | None = None
    data_path: str | None = None
    model_path: str | None = None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> NodeSettings:
        """Parse a SuperNode's node config; raise ValueError naming the key and the fix."""
        partition_id = _int(node_config, PARTITION_ID)
        if partition_id is None or partition_id < 0:
            raise ValueError(
                f"SuperNode needs {PARTITION_ID} >= 0 in its node config (the client id it trains as), e.g. {EXAMPLE}"
            )
        num_partitions = _int(node_config, NUM_PARTITIONS)
        data_path = _path(node_config, DATA_PATH)
        if data_path is None and num_partitions is None:
            raise ValueError(
                f"SuperNode needs {NUM_PARTITIONS} (to train on a shard of the run's dataset) or {DATA_PATH} "
                f"(its own data) in its node config, e.g. {EXAMPLE}"
            )
        if num_partitions is not None and not 0 <= partition_id < num_partitions:
            raise ValueError(
                f"SuperNode {PARTITION_ID}={partition_id} is out of range for {NUM_PARTITIONS}={num_partitions}; "
                f"use 0 .. {num_partitions - 1}"
            )
        return cls(partition_id, num_partitions, data_path, _path(node_config, MODEL_PATH))

    def check_run(self, num_clients: int) -> None:
        """Check this node against the run's ``--num_clients``."""
        if self.partition_id >= num_clients:
            raise ValueError(
                f"SuperNode {PARTITION_ID}={self.partition_id} does not exist in a run with --num_clients "
                f"{num_clients}; give the SuperNodes ids 0 .. {num_clients - 1}"
            )
        if self.data_path is None and self.num_partitions != num_clients:
            raise ValueError(
                f"SuperNode {NUM_PARTITIONS}={self.num_partitions} differs from the run's --num_clients "
                f"{num_clients}: the dataset is split into --num_clients shards, so start the SuperNodes with "
                f"{NUM_PARTITIONS}={num_clients}"
            )
