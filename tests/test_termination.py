"""SIGTERM during a run: the last completed round is checkpointed, the process exits 143, and the resumed run
ends where an uninterrupted one does, byte for byte."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import federated_learning.round_loop as round_loop
from federated_learning.termination import Terminated, TerminationGuard
from tests.test_algorithms_end_to_end import _run

FILES = ("adapter_model.safetensors", "federated_state.safetensors", "federated_state.json")
# FedAvgM keeps server momentum; top-k keeps each client's error-feedback residual between rounds.
FLAGS = ("--fed_alg", "fedavgm", "--num_rounds", "4", "--save_model_freq", "4", "--upload_codec", "topk",
         "--topk_fraction", "0.2")


def test_guard_interrupts_only_the_interruptible_stretch() -> None:
    with TerminationGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)  # outside: only recorded
        assert guard.requested
        with pytest.raises(Terminated), guard.interruptible():  # a request already made cuts it before it starts
            raise AssertionError("not reached")
    with TerminationGuard() as guard, pytest.raises(Terminated), guard.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next statement
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handler is back


def _sigterm_during(monkeypatch: pytest.MonkeyPatch, server_round: int, nth_client: int) -> None:
    """Send SIGTERM to this process while the ``nth_client``-th client of ``server_round`` (0-based) trains."""
    real = round_loop.train_client
    seen: list[int] = []

    def train_client(*args: Any, **kwargs: Any) -> Any:
        task = args[3]
        if task.server_round == server_round:
            seen.append(task.client_id)
            if len(seen) == nth_client + 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(round_loop, "train_client", train_client)


@pytest.mark.parametrize("nth_client", [0, 1])
def test_sigterm_while_clients_train_checkpoints_the_last_round_and_resumes_exactly(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, nth_client: int
) -> None:
    full = _run(tmp_path, tiny_model_dir, "full", *FLAGS)
    with monkeypatch.context() as patch:
        _sigterm_during(patch, server_round=2, nth_client=nth_client)  # round 3, after 0 or 1 clients trained
        with pytest.raises(SystemExit) as stopped:
            _run(tmp_path, tiny_model_dir, "cut", *FLAGS)
    assert stopped.value.code == 143
    cut = tmp_path / "out" / "cut"
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-2"]  # not a schedule's: --save 4
    last = json.loads((cut / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["round"] == 2 and last["stopped"] == "sigterm"
    _run(tmp_path, tiny_model_dir, "cut", *FLAGS, "--resume_from_checkpoint", str(cut / "checkpoint-2"))
    for name in FILES:
        assert (full / "checkpoint-4" / name).read_bytes() == (cut / "checkpoint-4" / name).read_bytes(), name
    rounds = [json.loads(line)["round"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2, 3, 4]  # the stop line is gone, rounds 3 and 4 are the resumed run's


def test_sigterm_outside_training_finishes_the_round(tmp_path: Path, tiny_model_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """During aggregation the round completes, and the run stops before the next one."""
    real = round_loop.RoundLoop._screen

    def screen(self: Any, tasks: Any, replies: Any, starts: Any) -> Any:
        if tasks[0].server_round == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, tasks, replies, starts)

    monkeypatch.setattr(round_loop.RoundLoop, "_screen", screen)
    with pytest.raises(SystemExit):
        _run(tmp_path, tiny_model_dir, "after1", *FLAGS)
    run = tmp_path / "out" / "after1"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 1] and records[-1]["stopped"] == "sigterm"
