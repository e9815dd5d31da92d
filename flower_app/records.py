"""Round tasks, adapter states and client updates as Flower records, and back, losslessly.

A train message carries the client's start state (``global``: the global adapter, cut to the
client's rank, with any merged deltas; ``Aggregator.client_start``), the aggregator's payload for that client
(``payload/<name>``, e.g. SCAFFOLD's control variates) and the ``RoundTask``; the reply carries
the trained adapter (``params``), the client hooks' extras (``extras/<name>``), the example count
and the training metrics. Flower's ``Array`` serialises through numpy, which has no bfloat16:
such tensors travel as float32 (exact) and every state's dtypes travel beside it, so what
arrives is bit-identical to what was sent.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from federated_learning.client import RoundTask
from federated_learning.types import ClientUpdate, StateDict

GLOBAL = "global"
TASK = "task"
PAYLOAD = "payload/"
PARAMS = "params"
EXTRAS = "extras/"
UPDATE = "update"
METRICS = "metrics"
PERSONAL = "personal"  # in a SuperNode's own state: what its client keeps between rounds
DTYPES = ".dtypes"
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


@torch.no_grad()
def put_state(content: RecordDict, name: str, state: StateDict) -> None:
    """Store ``state`` in ``content`` under ``name`` (and its dtypes under ``name`` + ".dtypes")."""
    arrays = ArrayRecord()
    dtypes = ConfigRecord()
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise TypeError(f"adapter tensor {key} has dtype {tensor.dtype}; only floating-point adapters travel")
        arrays[key] = Array.from_torch_tensor(tensor.float() if tensor.dtype == torch.bfloat16 else tensor)
        dtypes[key] = dtype
    content[name] = arrays
    content[name + DTYPES] = dtypes


def get_state(content: RecordDict, name: str) -> StateDict:
    """Read back what ``put_state`` stored under ``name``."""
    arrays = content.array_records[name]
    dtypes = content.config_records[name + DTYPES]
    return {key: torch.from_numpy(array.numpy()).to(_DTYPES[str(dtypes[key])]) for key, array in arrays.items()}


def _names(content: RecordDict, prefix: str) -> list[str]:
    return [name[len(prefix):] for name in content.array_records if name.startswith(prefix)]


def train_content(task: RoundTask, start: StateDict, payload: dict[str, StateDict]) -> RecordDict:
    """The content of the server's train message to one client."""
    content = RecordDict({TASK: ConfigRecord(asdict(task))})
    put_state(content, GLOBAL, start)
    for name, state in payload.items():
        put_state(content, PAYLOAD + name, state)
    return content


def read_train_content(content: RecordDict) -> tuple[RoundTask, StateDict, dict[str, StateDict]]:
    """(task, start state, aggregator payload) from a train message."""
    record = content.config_records[TASK]
    task = RoundTask(**{f.name: record[f.name] for f in fields(RoundTask)})
    payload = {name: get_state(content, PAYLOAD + name) for name in _names(content, PAYLOAD)}
    return task, get_state(content, GLOBAL), payload


def update_content(update: ClientUpdate) -> RecordDict:
    """The content of a client's reply: its ``ClientUpdate``."""
    content = RecordDict({
        UPDATE: ConfigRecord({"client_id": update.client_id, "num_examples": update.num_examples}),
        METRICS: MetricRecord(dict(update.metrics)),
    })
    put_state(content, PARAMS, update.params)
    for name, state in update.extras.items():
        put_state(content, EXTRAS + name, state)
    return content


def read_update_content(content: RecordDict) -> ClientUpdate:
    """The ``ClientUpdate`` in a client's reply; a ValueError saying what is wrong when the reply is malformed.

    ``client_id`` and ``num_examples`` are passed on as sent (not converted), so that the server's
    check (``federated_learning.updates``) judges what the client really said.
    """
    try:
        record = content.config_records[UPDATE]
        return ClientUpdate(
            client_id=record["client_id"],
            params=get_state(content, PARAMS),
            num_examples=record["num_examples"],
            metrics=dict(content.metric_records[METRICS]),
            extras={name: get_state(content, EXTRAS + name) for name in _names(content, EXTRAS)},
        )
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"malformed reply ({type(err).__name__}: {err})") from err
