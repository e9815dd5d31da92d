"""The ClientApp: a SuperNode says which client it is, and trains that client's rounds.

Training is ``federated_learning.client.train_client``, the very function the single-process
simulation calls; this module only unpacks the server's message and packs the update.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from flower_app.node_config import IDENTITY, OWN_DATA, PARTITION_ID, NodeSettings

app = ClientApp()


@app.query()
def query(message: Message, context: Context) -> Message:
    """Answer the server's roll call with this node's partition-id (the client id it trains as) and data source."""
    node = NodeSettings.from_node_config(context.node_config)
    identity = ConfigRecord({PARTITION_ID: node.partition_id, OWN_DATA: node.data_path is not None})
    return Message(RecordDict({IDENTITY: identity}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train one round of this node's client from the start state in ``message``; reply with the update."""
    # Imported here, not at the top: the query handler runs in a fresh process too, and should
    # answer without loading torch, transformers and TRL.
    from federated_learning.client import train_client
    from flower_app.records import PERSONAL, RESIDUAL, get_state, put_state, read_train_content, update_content
    from flower_app.run_config import parse_run_config
    from flower_app.worker import get_worker

    node = NodeSettings.from_node_config(context.node_config)
    task, encoded, payload = read_train_content(message.content)
    if task.client_id != node.partition_id:
        raise ValueError(
            f"this SuperNode is client {node.partition_id}, but the server sent client {task.client_id}'s task"
        )
    worker = get_worker(context.run_id, parse_run_config(context.run_config), node)
    start = worker.wire.decode_start(encoded)
    # What this client keeps from round to round (FedSA-LoRA's B) lives in the node's state.
    personal = get_state(context.state, PERSONAL) if PERSONAL in context.state.array_records else None
    update, kept = train_client(
        worker.local_trainer, worker.trainable, worker.algorithm, task, worker.shard, start, payload, personal
    )
    if kept and all(bool(t.isfinite().all()) for t in kept.values()):
        put_state(context.state, PERSONAL, kept)  # (the node cannot know whether the server accepts its update)
    # The error-feedback residual (top-k's unsent values) stays on the node, as a client's own memory.
    residual = get_state(context.state, RESIDUAL) if RESIDUAL in context.state.array_records else None
    reply, residual = worker.wire.encode_update(update, start, residual, task.server_round)
    if residual:
        put_state(context.state, RESIDUAL, residual)
    return Message(update_content(reply), reply_to=message)
