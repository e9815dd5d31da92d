"""The server's view of the SuperNodes: which node is which client, and one round of training on them.

``GridClients`` is a ``ClientRunner`` (see ``federated_learning.round_loop``): the round loop
samples clients, builds each one's ``RoundTask`` and aggregates exactly as in the single-process
simulation, and only the training itself happens on the SuperNodes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federated_learning.aggregators import Aggregator
from federated_learning.client import RoundTask
from federated_learning.types import StateDict
from federated_learning.updates import UnreadableReply
from federated_learning.wire import EncodedState, EncodedUpdate, Wire
from flower_app.node_config import IDENTITY, OWN_DATA, PARTITION_ID
from flower_app.records import message_bytes, read_update_content, train_content, update_content

logger = logging.getLogger(__name__)

# What a reply's metrics (train_loss, steps, seconds and hook metrics) may add beyond the predicted reply.
METRICS_ALLOWANCE = 256


def _wait_for_nodes(grid: Grid, num_clients: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= num_clients:
            return node_ids
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(node_ids)} SuperNode(s) connected within node-timeout={timeout:g} s, but the run has "
                f"--num_clients {num_clients}: start one SuperNode per client (partition-id 0 .. {num_clients - 1}) "
                "or raise node-timeout"
            )
        time.sleep(1.0)


def map_clients(grid: Grid, num_clients: int, timeout: float) -> tuple[dict[int, int], set[int]]:
    """Ask every connected SuperNode for its partition-id; return {client id: node id} and the clients on own data."""
    node_ids = _wait_for_nodes(grid, num_clients, timeout)
    queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in node_ids]
    replies = list(grid.send_and_receive(queries, timeout=timeout))
    node_of: dict[int, int] = {}
    own_data: set[int] = set()
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise RuntimeError(f"SuperNode {node} could not say which client it is: {reply.error.reason}")
        identity = reply.content.config_records[IDENTITY]
        cid = int(identity[PARTITION_ID])
        if identity.get(OWN_DATA, False):
            own_data.add(cid)
        if cid in node_of:
            raise RuntimeError(f"SuperNodes {node_of[cid]} and {node} both have partition-id={cid}; give each its own")
        if cid >= num_clients:
            raise RuntimeError(
                f"SuperNode {node} has partition-id={cid}, but the run has --num_clients {num_clients}; "
                f"use partition-id 0 .. {num_clients - 1}"
            )
        node_of[cid] = node
    missing = sorted(set(range(num_clients)) - node_of.keys())
    if missing:
        raise RuntimeError(
            f"no SuperNode answered for client(s) {missing} (got {len(replies)} of {len(queries)} replies)"
        )
    logger.info("SuperNodes of clients 0..%d: %s", num_clients - 1, [node_of[c] for c in range(num_clients)])
    return node_of, own_data


class GridClients:
    """Trains each of a round's clients on the SuperNode that holds its data."""

    def __init__(self, grid: Grid, node_of: dict[int, int], round_timeout: float | None = None) -> None:
        """``node_of`` maps client ids to node ids (see ``map_clients``)."""
        self.grid = grid
        self.node_of = node_of
        self.round_timeout = round_timeout

    def round_cost(self, aggregator: Aggregator, wire: Wire, tasks: Sequence[RoundTask], starts: Sequence[StateDict],
                   encoded: Sequence[EncodedState]) -> int:
        """Bytes the round will move as Flower serialises it, before it runs (``--comm_budget_mb``): each train
        message exactly, each reply as a reply of the shapes the server expects back (zeros; example and step
        counts at their largest encoding) plus ``METRICS_ALLOWANCE`` for its metrics."""
        total = 0
        for task, start, down in zip(tasks, starts, encoded, strict=True):
            total += message_bytes(train_content(task, down, aggregator.client_payload(task.client_id)))
            expected = {k: start[k] for k in aggregator.client_class.sent_keys(task.server_round, start)}
            dtype = {k: torch.float32 if wire.sends_updates else t.dtype for k, t in expected.items()}
            parts = {k: {name: torch.zeros(shape, dtype=part_dtype)
                         for name, (shape, part_dtype) in wire.upload.part_specs(tuple(t.shape), dtype[k]).items()}
                     for k, t in expected.items()}
            extras = {name: {k: torch.zeros(t.shape) for k, t in expected.items()}
                      for name in aggregator.required_extras}
            reply = EncodedUpdate(task.client_id, EncodedState(parts, {k: (tuple(t.shape), dtype[k])
                                                                       for k, t in expected.items()}),
                                  2 ** 62, {"train_loss": 0.0, "steps": 2 ** 62, "seconds": 0.0}, extras)
            total += message_bytes(update_content(reply)) + METRICS_ALLOWANCE
        return total

    def __call__(
        self, aggregator: Aggregator, tasks: Sequence[RoundTask], starts: Sequence[EncodedState]
    ) -> list[EncodedUpdate | UnreadableReply]:
        """Send every task with its encoded start state at once (clients train in parallel); return the encoded
        updates in task order, with the serialised size of each train message and reply as the bytes moved.

        A reply that cannot be read as an update (malformed records, another client's id) comes
        back as an ``UnreadableReply``, which the round loop leaves out, recording why. A client
        that fails or does not answer within ``round_timeout`` fails the run, as a client raising in
        the single-process simulation would: a silently smaller round would make the result depend
        on which machine happened to be slow.
        """
        contents = [train_content(task, start, aggregator.client_payload(task.client_id))
                    for task, start in zip(tasks, starts, strict=True)]
        messages = [
            Message(content, dst_node_id=self.node_of[task.client_id], message_type=MessageType.TRAIN,
                    group_id=str(task.server_round + 1))
            for task, content in zip(tasks, contents, strict=True)
        ]
        replies = {r.metadata.src_node_id: r for r in self.grid.send_and_receive(messages, timeout=self.round_timeout)}
        updates: list[EncodedUpdate | UnreadableReply] = []
        for task, content in zip(tasks, contents, strict=True):
            node = self.node_of[task.client_id]
            reply = replies.get(node)
            where = f"round {task.server_round + 1}: client {task.client_id} (SuperNode {node})"
            if reply is None:
                raise RuntimeError(f"{where} sent no reply within round-timeout={self.round_timeout}")
            if reply.has_error():
                raise RuntimeError(f"{where} failed: {reply.error.reason}")
            try:
                update = read_update_content(reply.content)
            except ValueError as err:
                updates.append(UnreadableReply(task.client_id, f"SuperNode {node}: {err}", message_bytes(content)))
                continue
            update.bytes_downloaded = message_bytes(content)
            updates.append(update)
        return updates
