"""THE round loop, shared by every task, the single-process simulation and the Flower ServerApp.

sample clients -> broadcast the global adapter -> local training -> collect ClientUpdates ->
aggregate -> evaluate / checkpoint / log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from evaluation.client_eval import ClientEvaluation
from federated_learning.aggregators import Aggregator, ClientAlgorithm
from federated_learning.attacks import Attack
from federated_learning.checkpoint import save_checkpoint
from federated_learning.client import LocalTrainer, RoundTask, train_client
from federated_learning.codecs import build_codec
from federated_learning.lora_ranks import slice_rank
from federated_learning.partition import ClientRows
from federated_learning.personal import PersonalStates
from federated_learning.personalization import evaluate_clients, plot_client_scores
from federated_learning.sampling import sample_clients
from federated_learning.state import get_state, num_bytes, set_state
from federated_learning.termination import EXIT_STATUS, Terminated, TerminationGuard
from federated_learning.traffic import Traffic, round_cost
from federated_learning.types import ClientUpdate, StateDict
from federated_learning.updates import UnreadableReply, clip_update, numeric_metrics, rejection_reason, update_norm
from federated_learning.wire import EncodedState, EncodedUpdate, Wire
from utils.schedule import cosine_learning_rate

logger = logging.getLogger(__name__)

Evaluator = Callable[[torch.nn.Module], dict[str, float]]
ClientRunner = Callable[[Aggregator, Sequence[RoundTask], Sequence[EncodedState]],
                        list[EncodedUpdate | UnreadableReply]]
"""Trains one round's clients, each from its start state as it travels (``federated_learning.wire``; same
order as the tasks); returns their encoded updates in task order, each with the bytes the transport
measured (an ``UnreadableReply`` for a reply that could not be read).

The default trains them one after another in this process (``RoundLoop._train_in_process``);
the Flower ServerApp passes one that trains each on the SuperNode holding its data.
"""


# The per-client metrics the server writes itself: a client's own metrics under these names are dropped.
SERVER_METRICS = frozenset({"update_norm", "clipped_from_norm", "failed", "rejected", "bytes_uploaded",
                            "bytes_downloaded"})


@dataclass
class _Round:
    """One round before it runs: its clients, their tasks, start states and the starts as they travel."""

    server_round: int
    clients: list[int]
    learning_rate: float
    tasks: list[RoundTask] = field(default_factory=list)
    starts: list[StateDict] = field(default_factory=list)
    encoded: list[EncodedState] = field(default_factory=list)
    unavailable: list[int] = field(default_factory=list)  # clients the runner could not reach (left out of sampling)


@dataclass
class RoundPlan:
    """The federated settings the loop needs (a view of the parsed config)."""

    fed_alg: str  # as given (recorded in checkpoints, so a resume must use the same)
    local_client: int | None  # local<K>: K, the only client that trains; None for a federation
    num_rounds: int
    num_clients: int
    sample_clients: int
    examples_per_round: int  # batch_size x gradient_accumulation_steps x max_steps
    learning_rate: float
    min_learning_rate: float
    seed: int
    save_model_freq: int
    eval_every: int = 0
    client_weighting: str = "num_examples"  # "uniform": every accepted update weighs 1 (n_i = 1)
    max_update_norm: float = 0.0  # > 0: the bound C on ||y - x|| of every update
    update_norm_bound: str = "reject"  # above C: "reject" (left out) or "clip" (scaled to norm C)
    client_ranks: dict[int, int] = field(default_factory=dict)  # --client_lora_ranks; empty: the global rank
    comm_budget_mb: float = 0.0  # > 0: stop before a round would take the run's bytes (up + down) past it
    personalize_steps: int = 0  # --personalize_steps: local fine-tuning steps of the final per-client evaluation
    personalize_examples: int = 0  # the rows they take: batch_size x gradient_accumulation_steps x personalize_steps


@dataclass
class RoundLoop:
    """State of one federated run: the global adapter (in ``model``), the aggregator and the rounds done."""

    plan: RoundPlan
    model: Any  # a PeftModel; the live adapter always holds the global state between rounds
    trainable: dict[str, torch.Tensor]  # the exchanged keys: adapter weights (and merged deltas) -> live tensors
    local_trainer: LocalTrainer | None  # None only with a client_runner that trains elsewhere
    shards: Sequence[Dataset | ClientRows]  # each client's rows (len and select)
    aggregator: Aggregator
    client_algorithm: ClientAlgorithm  # the client side of --fed_alg, for clients trained in this process
    run_dir: Path
    evaluator: Evaluator | None = None
    rounds_done: int = 0
    training_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    client_runner: ClientRunner | None = None  # None: train the clients in this process
    client_sizes: dict[int, int] | None = None  # examples each client holds, where the server knows it
    personal: PersonalStates = field(default_factory=PersonalStates)  # what clients trained here keep
    wire: Wire | None = None  # the run's codecs (None: none up and down)
    residuals: dict[int, StateDict] = field(default_factory=dict)  # error feedback of clients trained here
    traffic: Traffic = field(default_factory=Traffic)  # the bytes the run has moved
    client_evaluation: ClientEvaluation | None = None  # --eval_per_client: each client's held-out sets
    attack: Attack | None = None  # --attack: what the malicious clients trained here send instead
    _kept: dict[int, StateDict] = field(default_factory=dict, init=False, repr=False)  # until screened
    _evaluated: int | None = field(default=None, init=False, repr=False)  # the last round this run evaluated
    _termination: TerminationGuard | None = field(default=None, init=False, repr=False)  # while run() runs

    def __post_init__(self) -> None:
        if self.training_loss.size == 0:
            self.training_loss = np.full((self.plan.num_clients, self.plan.num_rounds), -1.0)
        if self.wire is None:
            self.wire = Wire(build_codec("none"), build_codec("none"), self.plan.seed)

    # ------------------------------------------------------------------ state for checkpoints
    def server_state(self) -> dict[str, Any]:
        """Everything besides the adapter that resuming needs."""
        state = {
            "aggregator": self.aggregator.state_dict(),
            "training_loss": torch.from_numpy(self.training_loss.copy()),
            "fed_alg": self.plan.fed_alg,
            "bytes_sent": self.traffic.state_dict(),
            "codecs": self.wire.describe(),
        }
        if self.client_runner is None and self.residuals:
            state["residuals"] = {str(c): r for c, r in self.residuals.items()}
        # What clients keep is here only when they train in this process (a Flower run's stays on its SuperNodes).
        keeps = self.client_runner is None and self.client_algorithm.keeps_personal_state()
        return {**state, "personal": self.personal.state_dict()} if keeps else state

    def restore(self, rounds_done: int, global_params: StateDict, server_state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by ``save_checkpoint``; a ValueError says what does not fit."""
        from federated_learning.resume import restore

        restore(self, rounds_done, global_params, server_state)

    # ------------------------------------------------------------------ the loop
    def run(self) -> StateDict:
        """Train the remaining rounds; return the final global adapter."""
        plan = self.plan
        global_params = get_state(self.trainable)
        with TerminationGuard() as self._termination:
            if self.rounds_done == 0 and self.evaluator is not None:
                self._write_metrics({"round": 0, **self._evaluate()})
                self._evaluated = 0
            # disable=None: no bar when stderr is not a terminal (CI, nohup, > log), where redraws would flood it.
            bar = tqdm(range(self.rounds_done, plan.num_rounds), desc="rounds", position=0, dynamic_ncols=True,
                       initial=self.rounds_done, total=plan.num_rounds, disable=None)
            for server_round in bar:
                if self._termination.requested:
                    self._stop_on_sigterm()
                after = self._round(server_round, global_params)
                if after is None:
                    break
                global_params = after
        return global_params

    def _round(self, server_round: int, global_params: StateDict) -> StateDict | None:
        """Run, evaluate, checkpoint and log round ``server_round`` (0-based); None when the budget stops the run.

        SIGTERM while the clients train puts back the last completed round and stops there
        (``federated_learning.termination``)."""
        plan = self.plan
        start = time.perf_counter()
        residuals = dict(self.residuals)  # the clients' error feedback after the last completed round
        try:
            round_plan = self._plan_round(server_round, global_params)
            if self._over_budget(round_plan):
                return None
            global_params, record = self._one_round(round_plan, global_params)
        except Terminated:
            self.residuals = residuals
            self._kept.clear()
            set_state(self.trainable, global_params)
            self._stop_on_sigterm()
        done = server_round + 1
        self.rounds_done = done
        last = done == plan.num_rounds
        if self.evaluator is not None and (last or (plan.eval_every and done % plan.eval_every == 0)):
            record.update(self._evaluate(final=last))
            self._evaluated = done
        if last or done % plan.save_model_freq == 0:
            save_checkpoint(self.run_dir, done, self.model, self.server_state())
            np.save(self.run_dir / "training_loss.npy", self.training_loss)
        record["round_seconds"] = time.perf_counter() - start
        self._write_metrics(record)
        logger.info(self._summary(record))
        return global_params

    def _interruptible(self) -> contextlib.AbstractContextManager[None]:
        """A stretch SIGTERM cuts short (``TerminationGuard.interruptible``) while ``run`` runs."""
        return self._termination.interruptible() if self._termination else contextlib.nullcontext()

    def _stop_on_sigterm(self) -> NoReturn:
        """Checkpoint the last completed round (the live adapter holds it), log, and exit with status 143."""
        done = self.rounds_done
        if not done:
            logger.warning("SIGTERM: stopping before round 1 completed; nothing to keep, start the run over")
            raise SystemExit(EXIT_STATUS)
        save_checkpoint(self.run_dir, done, self.model, self.server_state())
        np.save(self.run_dir / "training_loss.npy", self.training_loss)
        self._write_metrics({"round": done, "stopped": "sigterm", "bytes_total": self.traffic.total})
        logger.warning("SIGTERM: stopped after round %d of %d, the last completed; continue with "
                       "--resume_from_checkpoint %s", done, self.plan.num_rounds, self.run_dir / f"checkpoint-{done}")
        raise SystemExit(EXIT_STATUS)

    def _plan_round(self, server_round: int, global_params: StateDict) -> _Round:
        """Sample the round's clients; their tasks, start states and the starts as they will travel."""
        plan = self.plan
        # A runner that can lose clients (Flower: SuperNodes come and go) says which it can reach now.
        reachable = getattr(self.client_runner, "available_clients", None)
        with self._interruptible():  # it may wait for SuperNodes to come back
            available = None if reachable is None else reachable()
        unavailable = [] if available is None else sorted(set(range(plan.num_clients)) - set(available))
        if unavailable:
            logger.warning("round %d: clients %s are not connected; sampling among the %d that are",
                           server_round + 1, unavailable, len(available))
        clients = sample_clients(plan.local_client, plan.num_clients, plan.sample_clients, plan.seed, server_round,
                                 available)
        lr = cosine_learning_rate(server_round, plan.num_rounds, plan.learning_rate, plan.min_learning_rate)
        round_ = _Round(server_round, clients, lr, unavailable=unavailable)
        for cid in clients:
            rank = self.aggregator.client_rank(cid, plan.client_ranks.get(cid, 0))
            start = self.aggregator.client_start(cid, server_round, global_params)
            start = slice_rank(start, rank) if rank else start
            round_.starts.append(start)
            round_.encoded.append(self.wire.encode_start(start, cid, server_round))
            round_.tasks.append(RoundTask(cid, server_round, lr, plan.seed, plan.examples_per_round, rank))
        return round_

    def _over_budget(self, round_: _Round) -> bool:
        """With --comm_budget_mb: True (after a final checkpoint, evaluation and log line) when ``round_`` would
        take the run's bytes past the budget."""
        budget = self.plan.comm_budget_mb * 1e6
        if not budget:
            return False
        spent = self.traffic.total
        # A transport that serialises (Flower) predicts its own messages; in this process, the parts' bytes.
        cost_of = getattr(self.client_runner, "round_cost", None) or round_cost
        cost = cost_of(self.aggregator, self.wire, round_.tasks, round_.starts, round_.encoded)
        if spent + cost <= budget:
            return False
        done = self.rounds_done
        logger.warning("stopping after round %d of %d: round %d would send %.2f MB, taking the run's %.2f MB past "
                       "--comm_budget_mb %g", done, self.plan.num_rounds, done + 1, cost / 1e6, spent / 1e6,
                       self.plan.comm_budget_mb)
        record: dict[str, Any] = {"round": done, "stopped": "comm_budget", "bytes_total": spent,
                                  "next_round_bytes": cost}
        if self.evaluator is not None and self._evaluated != done:
            record.update(self._evaluate(final=True))
        save_checkpoint(self.run_dir, done, self.model, self.server_state())
        np.save(self.run_dir / "training_loss.npy", self.training_loss)
        self._write_metrics(record)
        return True

    def _one_round(self, round_: _Round, global_params: StateDict) -> tuple[StateDict, dict[str, Any]]:
        plan = self.plan
        server_round, clients, lr, tasks = round_.server_round, round_.clients, round_.learning_rate, round_.tasks
        runner = self.client_runner or self._train_in_process
        with self._interruptible():
            replies = runner(self.aggregator, tasks, round_.encoded)
        updates, client_metrics, rejected = self._screen(tasks, replies, round_.starts)
        if plan.client_weighting == "uniform":
            updates = [dataclasses.replace(u, num_examples=1) for u in updates]
        for update in updates:  # what a client keeps counts only when its update passed the check, and is finite
            kept = self._kept.get(update.client_id)
            if kept and all(bool(torch.isfinite(t).all()) for t in kept.values()):
                self.personal.keep(update.client_id, kept, update.num_examples)
        self._kept.clear()
        if updates:
            global_params = self.aggregator.aggregate(global_params, updates, server_round + 1)
        else:
            logger.warning("round %d: no usable client update; the global adapter is unchanged", server_round + 1)
        set_state(self.trainable, global_params)
        losses = [float(u.metrics["train_loss"]) for u in updates]
        if losses and not any(losses):
            logger.warning("round %d: every client's training loss is exactly 0: no trainable token reached the "
                           "loss, so nothing is learnt (check the data and --seq_length)", server_round + 1)
        record: dict[str, Any] = {
            "round": server_round + 1,
            "clients": clients,
            "learning_rate": lr,
            "mean_train_loss": float(np.mean(losses)) if losses else float("nan"),
            "client_metrics": client_metrics,
            "bytes_total": self.traffic.total,
        }
        if rejected:
            record["rejected_clients"] = rejected
        failed = [int(cid) for cid, metrics in client_metrics.items() if "failed" in metrics]
        if failed:
            record["failed_clients"] = failed
        if round_.unavailable:
            record["unavailable_clients"] = round_.unavailable
        clipped = [int(cid) for cid, metrics in client_metrics.items() if "clipped_from_norm" in metrics]
        if clipped:
            record["clipped_clients"] = clipped
        if updates and self.aggregator.round_record():
            record["aggregation"] = self.aggregator.round_record()
        return global_params, record

    def _screen(
        self, tasks: Sequence[RoundTask], replies: Sequence[EncodedUpdate | UnreadableReply],
        starts: Sequence[StateDict],
    ) -> tuple[list[ClientUpdate], dict[str, dict[str, Any]], list[int]]:
        """The updates that pass the server's check (``Wire.decode_update``, then ``updates.rejection_reason``,
        against what each client was to send back untrained: its start's ``sent_keys`` at its rank), every
        client's metrics (with the bytes its messages took, rejected or not) and the clients left out."""
        accepted: list[ClientUpdate] = []
        client_metrics: dict[str, dict[str, Any]] = {}
        rejected: list[int] = []
        clip = self.plan.update_norm_bound == "clip" and self.plan.max_update_norm > 0
        for reply, task, start in zip(replies, tasks, starts, strict=True):
            cid, server_round = task.client_id, task.server_round
            expected = {key: start[key] for key in self.aggregator.client_class.sent_keys(server_round, start)}
            update: ClientUpdate | UnreadableReply | str = reply
            if isinstance(reply, EncodedUpdate):
                update = (f"answered as client {reply.client_id!r}" if reply.client_id != cid
                          else self.wire.decode_update(reply, expected))
            self.traffic.count(reply)
            if isinstance(update, ClientUpdate):  # what it trained from (IFCA: the cluster it names), or why not
                trained_from = self.aggregator.reply_start(update, expected)
                update, expected = (trained_from, expected) if isinstance(trained_from, str) else (update, trained_from)
            if isinstance(update, str):
                reason: str | None = update
            else:
                size = None if self.client_sizes is None else self.client_sizes.get(cid)
                reason = rejection_reason(expected, update, max_examples=size,
                                          max_update_norm=None if clip else self.plan.max_update_norm,
                                          required_extras=self.aggregator.required_extras)
            metrics = ({k: v for k, v in numeric_metrics(update.metrics).items() if k not in SERVER_METRICS}
                       if reason is None else {})
            if reason is None:
                metrics["update_norm"] = update_norm(expected, update.params)  # ||y - x|| as received
            if reason is None and clip:
                update, norm = clip_update(expected, update, self.plan.max_update_norm)
                if norm > self.plan.max_update_norm:
                    metrics["clipped_from_norm"] = norm
            metrics["bytes_uploaded"] = float(getattr(reply, "bytes_uploaded", 0))
            metrics["bytes_downloaded"] = float(reply.bytes_downloaded)
            if reason is None:
                accepted.append(update)
                self.training_loss[cid, server_round] = float(metrics["train_loss"])
            elif isinstance(reply, UnreadableReply) and reply.failed:  # nothing came back: not a bad update
                logger.warning("round %d: client %d failed: %s", server_round + 1, cid, reason)
                metrics["failed"] = reason
                self.training_loss[cid, server_round] = float("nan")
            else:
                logger.warning("round %d: client %d's update is left out: %s", server_round + 1, cid, reason)
                metrics["rejected"] = reason
                self.training_loss[cid, server_round] = float("nan")
                rejected.append(cid)
            client_metrics[str(cid)] = metrics
        return accepted, client_metrics, rejected

    def _train_in_process(
        self, aggregator: Aggregator, tasks: Sequence[RoundTask], encoded: Sequence[EncodedState]
    ) -> list[EncodedUpdate]:
        """The default runner: each client in turn on the one shared model and trainer; bytes are the parts'."""
        if self.local_trainer is None:
            raise ValueError("RoundLoop needs a local_trainer (or a client_runner) to train clients")
        replies = []
        for task, sent in zip(tasks, encoded, strict=True):
            cid = task.client_id
            payload = aggregator.client_payload(cid)
            start = self.wire.decode_start(sent)
            update, kept = train_client(self.local_trainer, self.trainable, self.client_algorithm, task,
                                        self.shards[cid], start, payload, self.personal.get(cid))
            self._kept[cid] = kept
            if self.attack is not None:
                update = self.attack.apply(update, start, task.server_round)
            reply, residual = self.wire.encode_update(update, start, self.residuals.get(cid), task.server_round)
            if residual:
                self.residuals[cid] = residual
            reply.bytes_uploaded = reply.encoded.nbytes + sum(num_bytes(e) for e in update.extras.values())
            reply.bytes_downloaded = sent.nbytes + sum(num_bytes(p) for p in payload.values())
            replies.append(reply)
        return replies

    # ------------------------------------------------------------------ helpers
    def _evaluate(self, final: bool = False) -> dict[str, Any]:
        """The evaluator's metrics of the global model (with clients' kept keys at their mean, ``PersonalStates``;
        a Ditto client's personal model is not part of it), then each client's (``--eval_per_client``)."""
        assert self.evaluator is not None
        start = time.perf_counter()
        view = self.global_view()
        global_params = get_state(self.trainable) if view is not None else {}
        if view is None:
            metrics = self.evaluator(self.model)
        else:
            set_state(self.trainable, view)
            try:
                metrics = self.evaluator(self.model)
            finally:
                set_state(self.trainable, global_params)
        if self.client_evaluation is not None:
            metrics.update(evaluate_clients(self, final))
        metrics["eval_seconds"] = time.perf_counter() - start
        return metrics

    def global_view(self) -> StateDict | None:
        """The global model where it is not the live adapter alone: FedSA-LoRA's, with each client-kept key at the
        clients' mean (``PersonalStates.mean_view``); None otherwise (a Ditto client's personal model is not part
        of the global one)."""
        if not self.personal.states or self.client_algorithm.personal_model:
            return None
        return self.personal.mean_view(get_state(self.trainable))

    def _write_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.client_evaluation is not None and "per_client" in record:
            plot_client_scores(self.run_dir, self.client_evaluation.headline)

    def truncate_metrics(self, rounds_done: int) -> None:
        """Drop the metrics.jsonl lines of rounds after ``rounds_done`` (a resume rewrites them)."""
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if json.loads(line)["round"] <= rounds_done and "stopped" not in json.loads(line)]
            path.write_text("".join(line + "\n" for line in kept))

    def _summary(self, record: dict[str, Any]) -> str:
        evals = " | ".join(f"{k} {v:.4g}" for k, v in record.items() if k.startswith("eval_") and k != "eval_seconds")
        parts = [
            f"round {record['round']}/{self.plan.num_rounds}",
            f"clients {record['clients']}",
            f"loss {record['mean_train_loss']:.4f}",
            *([evals] if evals else []),
            f"{record['round_seconds']:.1f} s",
        ]
        return " | ".join(parts)

