"""Fake client runners written on plain states, adapted to the round loop's transport (``federated_learning.wire``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from federated_learning.codecs import build_codec
from federated_learning.state import num_bytes
from federated_learning.types import ClientUpdate, StateDict
from federated_learning.wire import EncodedUpdate, Wire

PlainRunner = Callable[[Any, Sequence[Any], Sequence[StateDict]], list[Any]]


def uncompressed(replies: PlainRunner) -> Callable[..., list[Any]]:
    """A ``ClientRunner`` that hands ``replies`` the decoded start states and sends back its ``ClientUpdate``s
    uncompressed (anything else it returns, e.g. an ``UnreadableReply``, as it is), bytes counted as the
    in-process runner counts them."""
    wire = Wire(build_codec("none"), build_codec("none"), 0)

    def runner(aggregator: Any, tasks: Sequence[Any], encoded: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for reply, sent in zip(replies(aggregator, tasks, [wire.decode_start(e) for e in encoded]), encoded,
                               strict=True):
            if isinstance(reply, ClientUpdate):
                reply, _ = wire.encode_update(reply, {}, None, 0)
                assert isinstance(reply, EncodedUpdate)
                reply.bytes_uploaded = reply.encoded.nbytes + sum(num_bytes(e) for e in reply.extras.values())
                reply.bytes_downloaded = sent.nbytes
            out.append(reply)
        return out

    return runner
