"""Round tasks, adapter states and client updates as Flower records, and back, losslessly.

A train message carries the client's start state as the download codec encoded it (``global/<part>``:
the global adapter, cut to the client's rank, with any merged deltas; ``Aggregator.client_start``;
``federated_learning.wire``), the aggregator's payload for that client (``payload/<name>``, e.g.
SCAFFOLD's control variates) and the ``RoundTask``; the reply carries the trained adapter (or its
update) as the upload codec encoded it (``params/<part>``), the client hooks' extras
(``extras/<name>``), the example count and the training metrics. Flower's ``Array`` serialises
through numpy, which has no bfloat16: such tensors travel as float32 (exact) and every state's
dtypes travel beside it, so what arrives is bit-identical to what was sent. ``message_bytes`` is
the size of a message's content as Flower serialises it, which the server reports as the bytes a
client-round moved.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from federated_learning.client import RoundTask
from federated_learning.types import StateDict
from federated_learning.wire import EncodedState, EncodedUpdate

GLOBAL = "global"
TASK = "task"
PAYLOAD = "payload/"
PARAMS = "params"
EXTRAS = "extras/"
UPDATE = "update"
METRICS = "metrics"
PERSONAL = "personal"  # in a SuperNode's own state: what its client keeps between rounds
RESIDUAL = "residual"  # in a SuperNode's own state: its error-feedback residual (federated_learning.wire)
DTYPES = ".dtypes"
SPECS = ".specs"
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                                      torch.int8, torch.int16, torch.int32, torch.int64)}


@torch.no_grad()
def put_state(content: RecordDict, name: str, state: StateDict) -> None:
    """Store ``state`` in ``content`` under ``name`` (and its dtypes under ``name`` + ".dtypes")."""
    arrays = ArrayRecord()
    dtypes = ConfigRecord()
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise TypeError(f"tensor {key} has dtype {tensor.dtype}, which does not travel")
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


def put_encoded(content: RecordDict, name: str, encoded: EncodedState) -> None:
    """Store ``encoded`` in ``content``: each part name's tensors under ``name/<part>``, the specs under
    ``name`` + ".specs" ("<dtype>:<d0>,<d1>,...")."""
    for part in sorted({p for parts in encoded.parts.values() for p in parts}):
        put_state(content, f"{name}/{part}", {k: parts[part] for k, parts in encoded.parts.items() if part in parts})
    content[name + SPECS] = ConfigRecord({
        key: f"{str(dtype).removeprefix('torch.')}:{','.join(map(str, shape))}"
        for key, (shape, dtype) in encoded.specs.items()})


def get_encoded(content: RecordDict, name: str) -> EncodedState:
    """Read back what ``put_encoded`` stored under ``name``."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for part in _names(content, f"{name}/"):
        for key, tensor in get_state(content, f"{name}/{part}").items():
            parts.setdefault(key, {})[part] = tensor
    specs = {}
    for key, spec in content.config_records[name + SPECS].items():
        dtype, _, shape = str(spec).partition(":")
        specs[key] = (tuple(int(n) for n in shape.split(",") if n), _DTYPES[dtype])
    return EncodedState(parts, specs)


def message_bytes(content: RecordDict) -> int:
    """The size of ``content`` as Flower serialises it into a message (protobuf bytes)."""
    return recorddict_to_proto(content).ByteSize()


def train_content(task: RoundTask, start: EncodedState, payload: dict[str, StateDict]) -> RecordDict:
    """The content of the server's train message to one client."""
    content = RecordDict({TASK: ConfigRecord(asdict(task))})
    put_encoded(content, GLOBAL, start)
    for name, state in payload.items():
        put_state(content, PAYLOAD + name, state)
    return content


def read_train_content(content: RecordDict) -> tuple[RoundTask, EncodedState, dict[str, StateDict]]:
    """(task, encoded start state, aggregator payload) from a train message."""
    record = content.config_records[TASK]
    task = RoundTask(**{f.name: record[f.name] for f in fields(RoundTask)})
    payload = {name: get_state(content, PAYLOAD + name) for name in _names(content, PAYLOAD)}
    return task, get_encoded(content, GLOBAL), payload


def update_content(reply: EncodedUpdate) -> RecordDict:
    """The content of a client's reply: its ``EncodedUpdate`` (the bytes fields stay behind: the server measures)."""
    content = RecordDict({
        UPDATE: ConfigRecord({"client_id": reply.client_id, "num_examples": reply.num_examples}),
        METRICS: MetricRecord(dict(reply.metrics)),
    })
    put_encoded(content, PARAMS, reply.encoded)
    for name, state in reply.extras.items():
        put_state(content, EXTRAS + name, state)
    return content


def read_update_content(content: RecordDict) -> EncodedUpdate:
    """The ``EncodedUpdate`` in a client's reply, its ``bytes_uploaded`` the reply's serialised size; a
    ValueError saying what is wrong when the reply is malformed.

    ``client_id`` and ``num_examples`` are passed on as sent (not converted), so that the server's
    check (``federated_learning.wire``, ``federated_learning.updates``) judges what the client really said.
    """
    try:
        record = content.config_records[UPDATE]
        return EncodedUpdate(
            client_id=record["client_id"],
            encoded=get_encoded(content, PARAMS),
            num_examples=record["num_examples"],
            metrics=dict(content.metric_records[METRICS]),
            extras={name: get_state(content, EXTRAS + name) for name in _names(content, EXTRAS)},
            bytes_uploaded=message_bytes(content),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"malformed reply ({type(err).__name__}: {err})") from err
