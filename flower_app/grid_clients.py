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


def _identities(grid: Grid, node_ids: Sequence[int], timeout: float) -> list[tuple[int, int | None, bool, str]]:
    """(node, partition-id, on own data, error) of each of ``node_ids`` that answered who it is."""
    queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in node_ids]
    answers = []
    for reply in grid.send_and_receive(queries, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            answers.append((node, None, False, reply.error.reason))
            continue
        try:
            identity = reply.content.config_records[IDENTITY]
            cid = identity[PARTITION_ID]
            if isinstance(cid, bool) or not isinstance(cid, int):
                raise TypeError(f"partition-id {cid!r} is not a whole number")
        except (KeyError, TypeError) as err:
            answers.append((node, None, False, f"malformed identity reply ({err!r})"))
            continue
        answers.append((node, cid, bool(identity.get(OWN_DATA, False)), ""))
    return answers


def map_clients(grid: Grid, num_clients: int, timeout: float) -> tuple[dict[int, int], set[int]]:
    """Ask every connected SuperNode for its partition-id; return {client id: node id} and the clients on own data."""
    node_ids = _wait_for_nodes(grid, num_clients, timeout)
    replies = _identities(grid, node_ids, timeout)
    node_of: dict[int, int] = {}
    own_data: set[int] = set()
    for node, cid, own, error in replies:
        if cid is None:
            raise RuntimeError(f"SuperNode {node} could not say which client it is: {error}")
        if own:
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
            f"no SuperNode answered for client(s) {missing} (got {len(replies)} of {len(node_ids)} replies)"
        )
    logger.info("SuperNodes of clients 0..%d: %s", num_clients - 1, [node_of[c] for c in range(num_clients)])
    return node_of, own_data


class GridClients:
    """Trains each of a round's clients on the SuperNode that holds its data."""

    def __init__(self, grid: Grid, node_of: dict[int, int], round_timeout: float | None = None,
                 min_fit_clients: int = 1, query_timeout: float = 30.0) -> None:
        """``node_of`` maps client ids to node ids (see ``map_clients``); a round needs ``min_fit_clients`` replies
        (``--min_fit_clients``); ``query_timeout``: how long a new SuperNode may take to say which client it is."""
        self.grid = grid
        self.node_of = dict(node_of)
        self.round_timeout = round_timeout
        self.min_fit_clients = min_fit_clients
        self.query_timeout = query_timeout
        self._refused: set[int] = set()  # new nodes already left out: not asked again

    def available_clients(self) -> list[int]:
        """The clients whose SuperNode is connected now, after waiting up to ``query_timeout`` for at least
        ``min_fit_clients`` of them (else a RuntimeError). A SuperNode that (re)connected since the last round
        says which client it is and takes that client over (a restarted SuperNode has a new node id)."""
        deadline = time.monotonic() + self.query_timeout
        while True:
            available = self._connected_clients()
            if len(available) >= self.min_fit_clients:
                return available
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(available)} of the run's SuperNodes are connected, fewer than "
                                   f"--min_fit_clients {self.min_fit_clients}; restart the missing ones")
            time.sleep(1.0)

    def _connected_clients(self) -> list[int]:
        connected = set(self.grid.get_node_ids())
        new = sorted(connected - set(self.node_of.values()) - self._refused)
        answered = _identities(self.grid, new, self.query_timeout) if new else []
        self._refused.update(set(new) - {node for node, *_ in answered})  # silent: not waited for again
        for node, cid, _, error in answered:
            if cid is None or not 0 <= cid < len(self.node_of):
                reason = error or f"partition-id={cid} is no client of the run"
            elif self.node_of[cid] in connected:
                reason = f"client {cid} is on SuperNode {self.node_of[cid]}, still connected"
            else:
                reason = ""
            if reason:
                logger.warning("SuperNode %d is left out: %s", node, reason)
                self._refused.add(node)
                continue
            logger.info("client %d is back, on SuperNode %d (was %d)", cid, node, self.node_of[cid])
            self.node_of[cid] = node
        return sorted(cid for cid, node in self.node_of.items() if node in connected)

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
        that fails or does not answer within ``round_timeout`` comes back as a ``failed`` one, left
        out and recorded (``failed_clients``), as long as ``min_fit_clients`` replied; with fewer the
        round fails the run (Flower's ``accept_failures`` with its ``min_fit_clients``).
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
            if reply is None or reply.has_error():
                reason = (f"SuperNode {node} sent no reply within round-timeout={self.round_timeout}" if reply is None
                          else f"SuperNode {node} failed: {reply.error.reason}")
                updates.append(UnreadableReply(task.client_id, reason, message_bytes(content), failed=True))
                continue
            try:
                update = read_update_content(reply.content)
            except ValueError as err:
                updates.append(UnreadableReply(task.client_id, f"SuperNode {node}: {err}", message_bytes(content)))
                continue
            update.bytes_downloaded = message_bytes(content)
            updates.append(update)
        failed = [u for u in updates if isinstance(u, UnreadableReply) and u.failed]
        if len(updates) - len(failed) < self.min_fit_clients:
            reasons = "; ".join(f"client {u.client_id}: {u.reason}" for u in failed)
            raise RuntimeError(f"round {tasks[0].server_round + 1}: {len(updates) - len(failed)} of {len(tasks)} "
                               f"clients replied, fewer than --min_fit_clients {self.min_fit_clients} ({reasons})")
        return updates
