"""The Flower App: message encoding, node and run config, the server's grid runner, and a real deployment.

The slow tests start a SuperLink and SuperNodes on loopback through
``training_scripts/run_flower_local.sh`` and check the global adapter against the single-process
simulation's, and that a failed run makes the script fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import main_sft
from federated_learning.aggregators import get_aggregator
from federated_learning.client import RoundTask
from federated_learning.codecs import build_codec
from federated_learning.types import ClientUpdate
from federated_learning.wire import EncodedUpdate, Wire
from flower_app.grid_clients import GridClients, map_clients
from flower_app.node_config import IDENTITY, PARTITION_ID, NodeSettings
from flower_app.records import (
    message_bytes,
    read_train_content,
    read_update_content,
    train_content,
    update_content,
)
from flower_app.run_config import parse_run_config

REPO = Path(__file__).resolve().parent.parent
PLAIN = Wire(build_codec("none"), build_codec("none"), 0)  # what a run without codecs sends
SCRIPT = REPO / "training_scripts" / "run_flower_local.sh"


# ---------------------------------------------------------------------- records


def test_train_message_round_trips_bit_exact() -> None:
    generator = torch.Generator().manual_seed(0)
    global_params = {
        "a.lora_A.weight": torch.randn(4, 8, generator=generator).to(torch.bfloat16),  # numpy has no bfloat16
        "a.lora_B.weight": torch.randn(8, 4, generator=generator),
    }
    payload = {"c": {"a.lora_A.weight": torch.full((4, 8), 0.25)}}
    task = RoundTask(client_id=3, server_round=1, learning_rate=4.9e-4, seed=2023, examples_per_round=16)
    got_task, got_encoded, got_payload = read_train_content(train_content(task, PLAIN.encode_start(
        global_params, 3, 1), payload))
    got_params = PLAIN.decode_start(got_encoded)
    assert got_task == task
    for key, tensor in global_params.items():
        assert got_params[key].dtype == tensor.dtype and torch.equal(got_params[key], tensor)
    assert torch.equal(got_payload["c"]["a.lora_A.weight"], payload["c"]["a.lora_A.weight"])


@pytest.mark.parametrize("codec", ["bf16", "fp16", "int8"])
def test_an_encoded_start_travels_bit_exact(codec: str) -> None:
    """The codec's parts (int16 bf16 patterns, fp16, int8 and scales) arrive as sent; the client decodes them."""
    start = {"a.lora_A.weight": torch.randn(4, 8, generator=torch.Generator().manual_seed(1))}
    wire = Wire(build_codec("none"), build_codec(codec, int8_scale="row"), 0)
    encoded = wire.encode_start(start, 0, 0)
    _, got, _ = read_train_content(train_content(RoundTask(0, 0, 1e-3, 1, 4), encoded, {}))
    assert got.specs == encoded.specs
    for part, tensor in encoded.parts["a.lora_A.weight"].items():
        assert got.parts["a.lora_A.weight"][part].dtype == tensor.dtype
        assert torch.equal(got.parts["a.lora_A.weight"][part], tensor)
    assert torch.equal(wire.decode_start(got)["a.lora_A.weight"], wire.decode_start(encoded)["a.lora_A.weight"])


def test_client_update_round_trips() -> None:
    update = ClientUpdate(
        client_id=1, params={"w": torch.arange(6.0).reshape(2, 3)}, num_examples=12,
        metrics={"train_loss": 1.25, "steps": 2}, extras={"delta_c": {"w": torch.ones(2, 3)}},
    )
    content = update_content(PLAIN.encode_update(update, {}, None, 0)[0])
    reply = read_update_content(content)
    assert reply.bytes_uploaded == message_bytes(content) > 6 * 4 + 6 * 4  # the serialised message, not the values
    got = PLAIN.decode_update(reply, {"w": torch.zeros(2, 3)})
    assert isinstance(got, ClientUpdate)
    assert (got.client_id, got.num_examples, got.metrics) == (1, 12, {"train_loss": 1.25, "steps": 2})
    assert torch.equal(got.params["w"], update.params["w"])
    assert torch.equal(got.extras["delta_c"]["w"], torch.ones(2, 3))


# ---------------------------------------------------------------------- node and run config


def test_node_settings_parse_and_check() -> None:
    node = NodeSettings.from_node_config({"partition-id": 1, "num-partitions": 2})
    assert node == NodeSettings(1, 2)
    node.check_run(num_clients=2)
    with pytest.raises(ValueError, match="num-partitions=2 differs from the run's --num_clients 3"):
        node.check_run(num_clients=3)
    private = NodeSettings.from_node_config({"partition-id": 0, "data-path": "/data/mine.jsonl"})
    private.check_run(num_clients=5)  # its own data: no split, so num-partitions is not needed
    assert private.data_path == "/data/mine.jsonl"


@pytest.mark.parametrize(
    ("node_config", "message"),
    [
        ({}, "partition-id >= 0"),
        ({"partition-id": "0", "num-partitions": 2}, "must be an integer"),
        ({"partition-id": 0}, "num-partitions .* or data-path"),
        ({"partition-id": 2, "num-partitions": 2}, "use 0 .. 1"),
    ],
)
def test_node_settings_errors(node_config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NodeSettings.from_node_config(node_config)


def test_run_config_uses_the_simulation_flags(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("num_rounds: 7\nfed_alg: fedprox\n")
    settings = parse_run_config(
        {"config": "run.yaml", "args": "--prox_mu 0.5 --run_name 'a b'", "node-timeout": 12, "round-timeout": 0},
        app_dir=tmp_path,
    )
    fed = settings.cfg.fed
    assert (settings.cfg.task, fed.num_rounds, fed.fed_alg, fed.prox_mu) == ("sft", 7, "fedprox", 0.5)
    assert settings.cfg.script.run_name == "a b"
    assert (settings.node_timeout, settings.round_timeout) == (12.0, None)


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({"args": "--no_such_flag 1"}, "no_such_flag"),
        ({"args": "--num_rounds x"}, "invalid int value"),
        ({"args": "--run_name 'unclosed"}, "quotes"),
        ({"config": "missing.yaml"}, "missing.yaml"),
        ({"round-timeout": -1}, "round-timeout"),
    ],
)
def test_run_config_errors(tmp_path: Path, run_config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_run_config(run_config, app_dir=tmp_path)


# ---------------------------------------------------------------------- the server's grid runner


class FakeGrid:
    """A Grid whose nodes answer in-process: ``answer(message) -> content or Error``; replies come back reversed."""

    def __init__(self, node_ids: list[int], answer: object) -> None:
        self.node_ids = node_ids
        self.answer = answer
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return self.node_ids

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for message in messages:
            self.sent.append(message)
            result = self.answer(message)  # type: ignore[operator]
            if result is not None:  # None: the node never answers (a timeout)
                replies.append(Message(result, reply_to=message))
        return replies[::-1]


@pytest.fixture()
def server_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages read the run and node of the process they are made in (set by Flower in its processes)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def identity(partition_of: dict[int, int]) -> object:
    def answer(message: Message) -> RecordDict:
        from flwr.app import ConfigRecord

        return RecordDict({IDENTITY: ConfigRecord({PARTITION_ID: partition_of[message.metadata.dst_node_id]})})

    return answer


def test_map_clients_pairs_partitions_with_nodes(server_identity: None) -> None:
    grid = FakeGrid([11, 22, 33], identity({11: 2, 22: 0, 33: 1}))
    assert map_clients(grid, num_clients=3, timeout=5) == ({2: 11, 0: 22, 1: 33}, set())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("partition_of", "message"),
    [({11: 0, 22: 0}, "both have partition-id=0"), ({11: 0, 22: 5}, "partition-id 0 .. 1")],
)
def test_map_clients_errors(server_identity: None, partition_of: dict[int, int], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        map_clients(FakeGrid([11, 22], identity(partition_of)), num_clients=2, timeout=5)  # type: ignore[arg-type]


def test_map_clients_waits_then_names_the_shortfall(server_identity: None) -> None:
    with pytest.raises(RuntimeError, match="1 SuperNode.* --num_clients 2"):
        map_clients(FakeGrid([11], identity({11: 0})), num_clients=2, timeout=0)  # type: ignore[arg-type]


def test_grid_clients_send_each_task_to_its_node_and_keep_task_order(server_identity: None) -> None:
    replies: list[RecordDict] = []

    def train(message: Message) -> RecordDict:
        task, encoded, payload = read_train_content(message.content)
        assert payload == {}  # FedAvg sends nothing besides the adapter
        trained = {k: v + task.client_id for k, v in PLAIN.decode_start(encoded).items()}
        update = ClientUpdate(task.client_id, trained, 10 * (task.client_id + 1), {"train_loss": 1.0})
        replies.append(update_content(PLAIN.encode_update(update, {}, None, 0)[0]))
        return replies[-1]

    grid = FakeGrid([11, 22], train)
    runner = GridClients(grid, {0: 22, 1: 11})  # type: ignore[arg-type]
    tasks = [RoundTask(c, 0, 1e-3, 7, 4) for c in (0, 1)]
    starts = [{"w": torch.zeros(2)}, {"w": torch.full((2,), 5.0)}]  # each client its own start state
    replied = runner(get_aggregator("fedavg"), tasks, [PLAIN.encode_start(s, 0, 0) for s in starts])
    updates = [PLAIN.decode_update(r, s) for r, s in zip(replied, starts, strict=True)]
    assert [u.client_id for u in updates] == [0, 1]  # replies came back reversed
    assert [m.metadata.dst_node_id for m in grid.sent] == [22, 11]
    assert [m.metadata.group_id for m in grid.sent] == ["1", "1"]
    assert torch.equal(updates[0].params["w"], torch.zeros(2))
    assert torch.equal(updates[1].params["w"], torch.full((2,), 6.0)) and updates[1].num_examples == 20
    # The bytes are the serialised messages' (node 22 = client 0 answered second).
    assert [r.bytes_downloaded for r in replied] == [message_bytes(m.content) for m in grid.sent]
    assert [r.bytes_uploaded for r in replied] == [message_bytes(replies[1]), message_bytes(replies[0])]


def test_grid_clients_pass_a_malformed_reply_on_as_unreadable(server_identity: None) -> None:
    """A reply whose records are missing or of the wrong kind is left out by the round loop, not a crash."""
    from federated_learning.updates import UnreadableReply
    from flower_app.records import UPDATE

    def train(message: Message) -> RecordDict:
        task, encoded, _ = read_train_content(message.content)
        update = ClientUpdate(task.client_id, PLAIN.decode_start(encoded), 10, {"train_loss": 1.0})
        content = update_content(PLAIN.encode_update(update, {}, None, 0)[0])
        if task.client_id == 1:
            del content.config_records[UPDATE]
        if task.client_id == 2:
            content.config_records["params/value.dtypes"]["w"] = "complex32"
        return content

    runner = GridClients(FakeGrid([11, 22, 33], train), {0: 11, 1: 22, 2: 33})  # type: ignore[arg-type]
    good, missing, bad_dtype = runner(get_aggregator("fedavg"), [RoundTask(c, 0, 1e-3, 7, 4) for c in (0, 1, 2)],
                                      [PLAIN.encode_start({"w": torch.zeros(2)}, 0, 0)] * 3)
    assert isinstance(good, EncodedUpdate) and good.num_examples == 10
    assert isinstance(missing, UnreadableReply) and "SuperNode 22: malformed reply (KeyError" in missing.reason
    assert missing.bytes_downloaded > 0  # its train message went out and counts
    assert isinstance(bad_dtype, UnreadableReply) and "complex32" in bad_dtype.reason


@pytest.mark.parametrize("codecs", [("none", "none"), ("int8", "bf16"), ("topk", "none")])
def test_grid_clients_predict_the_bytes_of_a_round(server_identity: None, codecs: tuple[str, str]) -> None:
    """--comm_budget_mb on Flower: the train messages exactly, each reply from above within the metrics allowance."""
    from flower_app.grid_clients import METRICS_ALLOWANCE

    wire = Wire(build_codec(codecs[0], topk_fraction=0.1), build_codec(codecs[1]), 0)
    generator = torch.Generator().manual_seed(0)
    starts = [{"a.lora_A.weight": torch.randn(4, 16, generator=generator),
               "a.lora_B.weight": torch.randn(16, 4, generator=generator)} for _ in range(2)]

    def train(message: Message) -> RecordDict:
        task, encoded, _ = read_train_content(message.content)
        start = wire.decode_start(encoded)
        trained = {k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in start.items()}
        update = ClientUpdate(task.client_id, trained, 123, {"train_loss": 0.7, "steps": 5, "seconds": 1.5})
        return update_content(wire.encode_update(update, start, None, 0)[0])

    runner = GridClients(FakeGrid([11, 22], train), {0: 11, 1: 22})  # type: ignore[arg-type]
    tasks = [RoundTask(c, 0, 1e-3, 7, 4) for c in (0, 1)]
    encoded = [wire.encode_start(s, t.client_id, 0) for s, t in zip(starts, tasks, strict=True)]
    aggregator = get_aggregator("fedavg")
    predicted = runner.round_cost(aggregator, wire, tasks, starts, encoded)
    replies = runner(aggregator, tasks, encoded)
    actual = sum(r.bytes_uploaded + r.bytes_downloaded for r in replies)
    assert actual <= predicted <= actual + 2 * (METRICS_ALLOWANCE + 64)  # + the counts at their widest varints


def test_grid_clients_fail_the_round_below_min_fit_clients(server_identity: None) -> None:
    grid = FakeGrid([11], lambda message: Error(code=0, reason="out of memory"))
    runner = GridClients(grid, {0: 11})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"round 3: 0 of 1 clients replied, fewer than --min_fit_clients 1 "
                                           r"\(client 0: SuperNode 11 failed: out of memory\)"):
        runner(get_aggregator("fedavg"), [RoundTask(0, 2, 1e-3, 7, 4)],
               [PLAIN.encode_start({"w": torch.zeros(2)}, 0, 2)])


def _trained(message: Message) -> RecordDict:
    task, encoded, _ = read_train_content(message.content)
    update = ClientUpdate(task.client_id, {k: v + 1 for k, v in PLAIN.decode_start(encoded).items()}, 10,
                          {"train_loss": 1.0})
    return update_content(PLAIN.encode_update(update, {}, None, 0)[0])


def test_grid_clients_leave_failed_and_late_clients_out(server_identity: None) -> None:
    """Client 1 errors, client 2 never answers: both come back as failed replies; client 0's update counts."""
    from federated_learning.updates import UnreadableReply

    def answer(message: Message) -> RecordDict | Error | None:
        node = message.metadata.dst_node_id
        return {11: _trained, 22: lambda m: Error(code=0, reason="killed"), 33: lambda m: None}[node](message)

    runner = GridClients(FakeGrid([11, 22, 33], answer), {0: 11, 1: 22, 2: 33}, round_timeout=5,  # type: ignore
                         min_fit_clients=1)
    good, errored, late = runner(get_aggregator("fedavg"), [RoundTask(c, 0, 1e-3, 7, 4) for c in (0, 1, 2)],
                                 [PLAIN.encode_start({"w": torch.zeros(2)}, 0, 0)] * 3)
    assert isinstance(good, EncodedUpdate)
    assert isinstance(errored, UnreadableReply) and errored.failed and errored.reason == "SuperNode 22 failed: killed"
    assert isinstance(late, UnreadableReply) and late.failed and "no reply within round-timeout=5" in late.reason
    assert late.bytes_downloaded > 0  # its train message went out
    with pytest.raises(RuntimeError, match="1 of 3 clients replied, fewer than --min_fit_clients 2"):
        GridClients(FakeGrid([11, 22, 33], answer), {0: 11, 1: 22, 2: 33}, min_fit_clients=2)(  # type: ignore
            get_aggregator("fedavg"), [RoundTask(c, 0, 1e-3, 7, 4) for c in (0, 1, 2)],
            [PLAIN.encode_start({"w": torch.zeros(2)}, 0, 0)] * 3)


def test_available_clients_follow_the_connected_nodes(server_identity: None) -> None:
    grid = FakeGrid([11, 22, 33], identity({44: 1, 55: 0}))
    runner = GridClients(grid, {0: 11, 1: 22, 2: 33}, query_timeout=0)  # type: ignore[arg-type]
    assert runner.available_clients() == [0, 1, 2]
    grid.node_ids = [11, 33]  # client 1's SuperNode is gone
    assert runner.available_clients() == [0, 2]
    grid.node_ids = [11, 33, 44, 55]  # it came back as node 44; node 55 claims client 0, whose node is connected
    assert runner.available_clients() == [0, 1, 2]
    assert runner.node_of == {0: 11, 1: 44, 2: 33}
    grid.node_ids = []
    with pytest.raises(RuntimeError, match="0 of the run's SuperNodes are connected, fewer than --min_fit_clients 1"):
        runner.available_clients()


class DroppingRunner:
    """A client runner over plain states: client 1 is never connected; client 3 fails whenever it is sampled."""

    def __init__(self) -> None:
        self.received: list[dict[int, ClientUpdate]] = []

    def available_clients(self) -> list[int]:
        return [0, 2, 3]

    def __call__(self, aggregator: Any, tasks: Any, encoded: Any) -> list[Any]:
        from federated_learning.updates import UnreadableReply

        out, received = [], {}
        for task, sent in zip(tasks, encoded, strict=True):
            assert task.client_id != 1
            if task.client_id == 3:
                out.append(UnreadableReply(3, "SuperNode 33 failed: killed", sent.nbytes, failed=True))
                continue
            start = PLAIN.decode_start(sent)
            update = ClientUpdate(task.client_id, {k: v + 0.1 * (task.client_id + 1) for k, v in start.items()},
                                  10, {"train_loss": 1.0}, {"delta_c": {k: torch.full(v.shape, 0.5)
                                                                        for k, v in start.items()}})
            received[task.client_id] = update
            reply, _ = PLAIN.encode_update(update, start, None, 0)
            reply.bytes_downloaded = sent.nbytes
            out.append(reply)
        self.received.append(received)
        return out


@pytest.mark.parametrize("fed_alg", ["fedavg", "scaffold", "fedadam"])
def test_round_loop_aggregates_the_replies_received(tmp_path: Path, tiny_model_dir: Path, fed_alg: str) -> None:
    """Dropouts: sampling skips the unconnected client, a failed one is recorded and left out, and the server state
    (SCAFFOLD's c and c_i, FedAdam's moments) moves only with the updates that arrived."""
    from config import FedArguments, RunConfig, ScriptArguments
    from federated_learning.build import build_round_loop
    from federated_learning.state import get_state
    from tests.peft_models import peft_model_with_active_lora

    runner = DroppingRunner()
    cfg = RunConfig("sft", ScriptArguments(seed=3), FedArguments(fed_alg=fed_alg, num_clients=4, sample_clients=3,
                                                                  num_rounds=2, save_model_freq=5))
    loop = build_round_loop(cfg, peft_model_with_active_lora(tiny_model_dir), None, [], tmp_path, None,
                            client_runner=runner, client_sizes={c: 10 for c in range(4)})
    x = get_state(loop.trainable)
    final = loop.run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    expected = get_aggregator(fed_alg, num_clients=4)
    for record, received in zip(records, runner.received, strict=True):
        assert record["clients"] == [0, 2, 3] and record["unavailable_clients"] == [1]
        assert record["failed_clients"] == [3] and "rejected_clients" not in record
        assert record["client_metrics"]["3"]["failed"] == "SuperNode 33 failed: killed"
        x = expected.aggregate(x, [received[c] for c in sorted(received)], record["round"])
    assert all(torch.equal(final[k], x[k]) for k in x)
    assert np.isnan(np.load(tmp_path / "training_loss.npy")[3]).all()  # the failed client's losses


def _records(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class LoopbackGrid:
    """A Grid whose SuperNodes are the real ClientApp called in-process (no transport, no processes).

    Each node keeps its own state across messages, as a SuperNode keeps ``Context.state`` for a run.
    """

    def __init__(self, node_configs: dict[int, dict[str, object]], run_config: dict[str, object]) -> None:
        self.node_configs = node_configs
        self.run_config = run_config
        self.states = {node: RecordDict() for node in node_configs}

    def get_node_ids(self) -> list[int]:
        return list(self.node_configs)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        from flower_app.client_app import app

        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            context = Context(run_id=1, node_id=node, node_config=self.node_configs[node], state=self.states[node],
                              run_config=self.run_config)
            replies.append(app(message, context))
        return replies


@pytest.mark.parametrize(("fed_alg", "extra"), [
    ("fedprox", []), ("scaffold", []), ("flexlora", ["--client_lora_ranks", "2,4,8"]),
    ("fedavg", ["--upload_codec", "int8", "--download_codec", "bf16"]),
    ("fedavg", ["--upload_codec", "topk", "--topk_fraction", "0.1"]),
], ids=["fedprox", "scaffold", "flexlora-ranks", "int8-up-bf16-down", "topk-up"])
def test_server_and_client_apps_equal_the_simulation(
    tmp_path: Path, tiny_model_dir: Path, server_identity: None, fed_alg: str, extra: list[str]
) -> None:
    """SCAFFOLD's control variates, FedProx's mu, FlexLoRA's per-client SVD starts of mixed ranks and the codecs'
    parts travel in the messages (top-k's residuals stay on the nodes, the simulation checkpoints them);
    3 clients, 2 sampled per round.

    The server evaluates the global model (with FlexLoRA's merged ΔW) on the held-out split as the simulation does.
    """
    from flower_app.server_app import main as server_main

    flags = [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", "bundled/fin_sentiment", "--dataset_sample",
        "30", "--fed_alg", fed_alg, "--prox_mu", "0.5", "--num_clients", "3", "--sample_clients", "2",
        "--num_rounds", "2", "--max_steps", "2", "--batch_size", "2", "--seq_length", "192", "--torch_threads", "1",
        "--run_name", "run", "--eval_samples", "3", *extra,
    ]
    run_config = {"args": shlex.join([*flags, "--output_dir", str(tmp_path / "flower")]), "config": "",
                  "node-timeout": 5, "round-timeout": 0}
    nodes = {100 + i: {"partition-id": i, "num-partitions": 3} for i in (2, 0, 1)}
    server_main(LoopbackGrid(nodes, run_config), Context(0, 0, {}, RecordDict(), run_config))  # type: ignore[arg-type]

    simulated = main_sft.main([*flags, "--output_dir", str(tmp_path / "simulation")])
    flower = tmp_path / "flower" / "run"
    names = ["adapter_model.safetensors", "federated_state.safetensors"]
    if fed_alg == "flexlora":
        names.append("merged_delta.safetensors")
        assert all(r["clients"] for r in _records(flower)[1:])
    for name in names:
        got, want = load_file(flower / "checkpoint-2" / name), load_file(simulated / "checkpoint-2" / name)
        residuals = {k for k in want if k.startswith("residuals/")}
        assert bool(residuals) == ("topk" in extra and name == "federated_state.safetensors")
        want = {k: v for k, v in want.items() if k not in residuals}
        assert got.keys() == want.keys() and got
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7)

    def evaluations(run_dir: Path) -> list[dict[str, float]]:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k.startswith("eval_") and k != "eval_seconds"} for r in records]

    got, want = evaluations(flower), evaluations(simulated)
    assert [sorted(e) for e in got] == [sorted(e) for e in want]
    assert "eval_accuracy" in got[0] and "eval_accuracy" in got[-1]  # before round 1 and after the last
    assert all(np.isfinite(e["eval_loss"]) for e in got if e)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-4)
    if fed_alg == "scaffold":  # the control variates were really exchanged
        assert any("c_i" in key for key in load_file(flower / "checkpoint-2" / "federated_state.safetensors"))
    if fed_alg == "flexlora":  # each client uploaded its own rank: the simulation counts the values' bytes, Flower
        # its serialised replies, which add a few hundred bytes per tensor (names, dtypes, numpy headers)
        def uploads(run_dir: Path) -> list[dict[str, float]]:
            return [{c: m["bytes_uploaded"] for c, m in r["client_metrics"].items()} for r in _records(run_dir)[1:]]

        tensors = len(load_file(simulated / "checkpoint-2" / "adapter_model.safetensors"))
        for got_round, want_round in zip(uploads(flower), uploads(simulated), strict=True):
            assert got_round.keys() == want_round.keys()
            for client, want_bytes in want_round.items():
                assert want_bytes < got_round[client] < want_bytes + 600 * tensors + 2000
        assert len({b for u in uploads(simulated) for b in u.values()}) > 1



def test_fedsa_clients_keep_their_b_on_their_nodes(tmp_path: Path, tiny_model_dir: Path, server_identity: None) -> None:
    """Each SuperNode keeps its client's B in its node state; the averaged A and every B equal the simulation's."""
    from flower_app.records import PERSONAL
    from flower_app.records import get_state as record_state
    from flower_app.server_app import main as server_main

    flags = [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", "bundled/fin_sentiment", "--dataset_sample",
        "30", "--fed_alg", "fedsa_lora", "--num_clients", "3", "--sample_clients", "2", "--num_rounds", "3",
        "--max_steps", "2", "--batch_size", "2", "--seq_length", "192", "--torch_threads", "1", "--run_name", "run",
        "--eval_samples", "0",
    ]
    run_config = {"args": shlex.join([*flags, "--output_dir", str(tmp_path / "flower")]), "config": "",
                  "node-timeout": 5, "round-timeout": 0}
    nodes = {100 + i: {"partition-id": i, "num-partitions": 3} for i in range(3)}
    grid = LoopbackGrid(nodes, run_config)
    server_main(grid, Context(0, 0, {}, RecordDict(), run_config))  # type: ignore[arg-type]
    simulated = main_sft.main([*flags, "--output_dir", str(tmp_path / "simulation")])
    got = load_file(tmp_path / "flower" / "run" / "checkpoint-3" / "adapter_model.safetensors")
    want = load_file(simulated / "checkpoint-3" / "adapter_model.safetensors")
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7)
    kept = load_file(simulated / "checkpoint-3" / "federated_state.safetensors")
    trained = {k.split("/")[2] for k in kept if k.startswith("personal/states/")}
    assert trained  # over 3 rounds of 2 of 3 clients, some client trains again from its own B
    for cid in trained:
        state = grid.states[100 + int(cid)]
        assert PERSONAL in state.array_records
        for key, value in record_state(state, PERSONAL).items():
            torch.testing.assert_close(value, kept[f"personal/states/{cid}/{key}"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ref_adapter", [False, True])
def test_dpo_server_and_client_apps_equal_the_simulation(
    tmp_path: Path, tiny_model_dir: Path, server_identity: None, ref_adapter: bool
) -> None:
    """mode = "dpo": main_dpo.py's run on Flower; the same adapter and held-out preference scores.

    With ``--ref_adapter`` the server evaluates against that reference too: before round 1 the policy
    is the reference (accuracy 0.5, margin 0), and its checkpoints hold the reference under ``ref/``.
    """
    import main_dpo
    from flower_app.server_app import main as server_main
    from tests.test_dpo_end_to_end import save_random_adapter

    flags = [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_sample", "40", "--fed_alg", "scaffold",
        "--num_clients", "3", "--sample_clients", "2", "--num_rounds", "2", "--max_steps", "1", "--batch_size", "2",
        "--seq_length", "72", "--torch_threads", "1", "--run_name", "run", "--eval_samples", "8",
    ]  # bundled/preferences (main_dpo's default); seq_length 72 drops some pairs, as the simulation does
    if ref_adapter:
        save_random_adapter(tiny_model_dir, tmp_path / "sft_adapter")
        flags += ["--ref_adapter", str(tmp_path / "sft_adapter")]
    run_config = {"mode": "dpo", "args": shlex.join([*flags, "--output_dir", str(tmp_path / "flower")]),
                  "config": "", "node-timeout": 5, "round-timeout": 0}
    nodes = {100 + i: {"partition-id": i, "num-partitions": 3} for i in (1, 2, 0)}
    server_main(LoopbackGrid(nodes, run_config), Context(0, 0, {}, RecordDict(), run_config))  # type: ignore[arg-type]

    simulated = main_dpo.main([*flags, "--output_dir", str(tmp_path / "simulation")])
    flower = tmp_path / "flower" / "run"
    got, want = (load_file(d / "checkpoint-2" / "adapter_model.safetensors") for d in (flower, simulated))
    assert got.keys() == want.keys() and any(t.abs().sum() > 0 for k, t in want.items() if "lora_B" in k)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7)
    records = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
               for d in (flower, simulated)]
    scores = [[{k: v for k, v in r.items() if k.startswith("eval_") and k != "eval_seconds"} for r in run]
              for run in records]
    assert scores[0][0] and scores[0][-1]  # evaluated before round 1 and after the last
    assert scores[0][0]["eval_preference_accuracy"] == 0.5 and scores[0][0]["eval_reward_margin"] == 0.0
    for got_round, want_round in zip(*scores, strict=True):
        assert got_round == pytest.approx(want_round, rel=1e-4)
    assert json.loads((flower / "config.json").read_text())["dataset_name"] == "bundled/preferences"
    for run_dir in (flower, simulated):
        assert (run_dir / "checkpoint-2" / "ref" / "adapter_model.safetensors").is_file() == ref_adapter


def test_run_config_mode_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode='ppo' is unknown"):
        parse_run_config({"mode": "ppo", "args": ""}, app_dir=tmp_path)


def test_supernodes_with_their_own_data(tmp_path: Path, tiny_model_dir: Path, server_identity: None) -> None:
    """data-path: each node trains on its own file; no dataset is split, the server never sees one."""
    from flower_app.server_app import main as server_main

    files = [write_jsonl(tmp_path / f"client{i}.jsonl", n) for i, n in enumerate((6, 10))]
    flags = [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", "no/such-dataset-on-the-server",
        "--num_clients", "2", "--sample_clients", "2", "--num_rounds", "1", "--max_steps", "1", "--batch_size", "2",
        "--seq_length", "64", "--torch_threads", "1", "--run_name", "run", "--output_dir", str(tmp_path / "out"),
    ]
    run_config = {"args": shlex.join(flags), "config": "", "node-timeout": 5, "round-timeout": 0}
    nodes = {7: {"partition-id": 0, "data-path": str(files[0])}, 8: {"partition-id": 1, "data-path": str(files[1])}}
    server_main(LoopbackGrid(nodes, run_config), Context(0, 0, {}, RecordDict(), run_config))  # type: ignore[arg-type]
    record = json.loads((tmp_path / "out" / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["clients"] == [0, 1] and all(m["steps"] == 1 for m in record["client_metrics"].values())
    assert (tmp_path / "out" / "run" / "checkpoint-1" / "adapter_model.safetensors").is_file()


# ---------------------------------------------------------------------- a real deployment on loopback


def write_jsonl(path: Path, n: int = 24) -> Path:
    """Invented instruction/response rows."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"What is {i} plus {i}?", "response": f"{2 * i}"}) + "\n")
    return path


def run_script(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run run_flower_local.sh; on a timeout, stop it so that its trap stops what it started."""
    env = {**os.environ, "PYTHON": sys.executable}  # the SuperLink and SuperNodes run in this environment
    with subprocess.Popen(["bash", str(SCRIPT), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, _ = proc.communicate(timeout=60)
            pytest.fail(f"run_flower_local.sh ran over {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def assert_nothing_left(output: str) -> None:
    """No process still uses the SuperLink's or a SuperNode's port (they, or their children, were left)."""
    match = re.search(r"SuperLink (127\.0\.0\.1:\d+), \d+ SuperNodes on ports ([\d ]+);", output)
    assert match, output[-3000:]
    addresses = [match.group(1)] + [f"127.0.0.1:{port}" for port in match.group(2).split()]
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(address in arg for arg in args for address in addresses):
            left.append(" ".join(args))
    assert not left, left


@pytest.mark.slow
def test_flower_deployment_equals_simulation(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl")
    flags = [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data), "--num_clients", "2",
        "--sample_clients", "2", "--num_rounds", "2", "--max_steps", "2", "--batch_size", "2", "--seq_length", "64",
        "--torch_threads", "1", "--run_name", "run",
    ]
    result = run_script(tmp_path, "--log-dir", str(tmp_path / "logs"), "--",
                        *flags, "--output_dir", str(tmp_path / "flower"))
    assert result.returncode == 0, result.stdout[-6000:]
    assert "status: finished:completed" in result.stdout
    assert_nothing_left(result.stdout)

    simulated = main_sft.main([*flags, "--output_dir", str(tmp_path / "simulation"), "--eval_samples", "2"])
    flower = tmp_path / "flower" / "run"
    got = load_file(flower / "checkpoint-2" / "adapter_model.safetensors")
    want = load_file(simulated / "checkpoint-2" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    assert any(t.abs().sum() > 0 for k, t in want.items() if "lora_B" in k)  # training moved the adapter
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.load(flower / "training_loss.npy"), np.load(simulated / "training_loss.npy"),
                               rtol=1e-5)
    records = [json.loads(line) for line in (flower / "metrics.jsonl").read_text().splitlines()]
    # Round 0 is the server's evaluation before training (this data has no held-out split: no scores).
    assert [r["round"] for r in records] == [0, 1, 2]
    assert [r["clients"] for r in records[1:]] == [[0, 1], [0, 1]]
    assert json.loads((flower / "config.json").read_text())["num_clients"] == 2
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), flower / "checkpoint-2")
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


@pytest.mark.slow
def test_flower_dpo_deployment_equals_simulation(tmp_path: Path, tiny_model_dir: Path) -> None:
    """run_flower_local.sh --dpo: main_dpo.py's flags and defaults (bundled/preferences) on SuperNodes."""
    import main_dpo

    flags = [
        "--model_name_or_path", str(tiny_model_dir), "--num_clients", "2", "--sample_clients", "2",
        "--num_rounds", "2", "--max_steps", "1", "--batch_size", "2", "--seq_length", "96", "--torch_threads", "1",
        "--eval_samples", "4", "--run_name", "run",
    ]
    result = run_script(tmp_path, "--dpo", "--log-dir", str(tmp_path / "logs"), "--",
                        *flags, "--output_dir", str(tmp_path / "flower"))
    assert result.returncode == 0, result.stdout[-6000:]
    assert "status: finished:completed" in result.stdout
    assert_nothing_left(result.stdout)

    simulated = main_dpo.main([*flags, "--output_dir", str(tmp_path / "simulation")])
    flower = tmp_path / "flower" / "run"
    got = load_file(flower / "checkpoint-2" / "adapter_model.safetensors")
    want = load_file(simulated / "checkpoint-2" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7)
    first = json.loads((flower / "metrics.jsonl").read_text().splitlines()[0])
    assert first["round"] == 0 and first["eval_pairs"] > 0  # the server scored held-out pairs


@pytest.mark.slow
def test_failed_run_fails_the_script(tmp_path: Path) -> None:
    result = run_script(tmp_path, "--nodes", "1", "--log-dir", str(tmp_path / "logs"), "--",
                        "--fed_alg", "nosuch", "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "status: finished:failed" in result.stdout and "--fed_alg 'nosuch' is unknown" in result.stdout
    assert_nothing_left(result.stdout)
    assert (tmp_path / "logs" / "superlink.log").is_file()  # a failed run keeps its logs


def _serverapps(root: int) -> list[int]:
    """PIDs of the flwr-serverapp processes below process ``root``."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
            todo.append(int(child))
            try:
                if "flwr-serverapp" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(child))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_sigterm_to_the_serverapp_keeps_its_last_round_and_the_run_resumes(tmp_path: Path,
                                                                           tiny_model_dir: Path) -> None:
    """SIGTERM to the ServerApp once round 2 is logged: it checkpoints its last completed round k and exits; a new
    run with --resume_from_checkpoint checkpoint-k ends where the uninterrupted simulation does."""
    data = write_jsonl(tmp_path / "train.jsonl")
    flags = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data), "--num_clients", "2",
             "--sample_clients", "2", "--num_rounds", "5", "--max_steps", "2", "--batch_size", "2", "--seq_length",
             "64", "--torch_threads", "1", "--run_name", "run", "--fed_alg", "fedavgm", "--save_model_freq", "5"]
    env = {**os.environ, "PYTHON": sys.executable}
    metrics = tmp_path / "flower" / "run" / "metrics.jsonl"
    with subprocess.Popen(["bash", str(SCRIPT), "--log-dir", str(tmp_path / "logs"), "--", *flags, "--output_dir",
                           str(tmp_path / "flower")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        deadline = time.monotonic() + 600
        while not (metrics.exists() and any(json.loads(line)["round"] >= 2 for line in
                                            metrics.read_text().splitlines())):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before round 2"
            time.sleep(0.2)
        (serverapp,) = _serverapps(proc.pid)
        os.kill(serverapp, signal.SIGTERM)
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "status: finished:completed" not in out
    assert_nothing_left(out)
    last = json.loads(metrics.read_text().splitlines()[-1])
    assert last["stopped"] == "sigterm" and 2 <= last["round"] < 5, out[-3000:]
    run = tmp_path / "flower" / "run"
    assert [p.name for p in run.glob("checkpoint-*")] == [f"checkpoint-{last['round']}"]

    resumed = run_script(tmp_path, "--log-dir", str(tmp_path / "logs2"), "--", *flags, "--output_dir",
                         str(tmp_path / "flower"), "--resume_from_checkpoint", str(run / f"checkpoint-{last['round']}"))
    assert resumed.returncode == 0 and "status: finished:completed" in resumed.stdout, resumed.stdout[-6000:]
    simulated = main_sft.main([*flags, "--output_dir", str(tmp_path / "simulation"), "--eval_samples", "2"])
    got = load_file(run / "checkpoint-5" / "adapter_model.safetensors")
    want = load_file(simulated / "checkpoint-5" / "adapter_model.safetensors")
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7)
    rounds = [json.loads(line)["round"] for line in metrics.read_text().splitlines()]
    assert rounds == list(range(6))


def test_a_malformed_or_silent_new_node_is_left_out_once(server_identity: None) -> None:
    """A new SuperNode whose identity reply is malformed, or that never answers, is left out and not asked again."""
    asked: list[int] = []

    def answer(message: Message) -> RecordDict | None:
        asked.append(message.metadata.dst_node_id)
        return None if message.metadata.dst_node_id == 55 else RecordDict()  # 44: no identity record

    grid = FakeGrid([11, 44, 55], answer)
    runner = GridClients(grid, {0: 11, 1: 22}, query_timeout=0)  # type: ignore[arg-type]
    assert runner.available_clients() == [0] and runner.available_clients() == [0]
    assert sorted(asked) == [44, 55]  # once each
