"""Local training of one client for one round, with one TRL trainer reused for the whole run.

Building a TRL trainer and re-tokenising a client's data every round is what made OpenFedLLM spend
~11% of a round outside local steps. Here the data is tokenised once per run and a single trainer
is built once; each client-round swaps in that client's rows, the round's learning rate, a fresh
optimizer and the algorithm's client hooks.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from federated_learning.aggregators._base import ClientAlgorithm, ClientHook
from federated_learning.lora_ranks import pad_rank, slice_rank
from federated_learning.partition import ClientRows
from federated_learning.sampling import derive_seed, sample_examples
from federated_learning.state import get_state, load_start, set_state
from federated_learning.types import ClientUpdate, StateDict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundTask:
    """What the server asks of one client in one round, besides the global adapter and payload."""

    client_id: int
    server_round: int  # 0-based, as the round loop counts
    learning_rate: float
    seed: int  # the run's --seed: every per-(client, round) draw derives from it
    examples_per_round: int  # batch_size x gradient_accumulation_steps x max_steps
    lora_rank: int = 0  # the LoRA rank this client trains and sends (0: the global adapter's)


class StepProgress(TrainerCallback):
    """A tqdm bar over the local steps of the client being trained (nested under the round bar)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.description = ""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self.bar = tqdm(total=state.max_steps, desc=self.description, position=1, leave=False, dynamic_ncols=True,
                        disable=None)  # None: off when stderr is not a terminal

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class HookCallback(TrainerCallback):
    """Runs an algorithm's ``ClientHook``s, in order, at the trainer's optimizer-step and end-of-training events."""

    def __init__(self, hooks: Sequence[ClientHook]) -> None:
        """Wrap ``hooks`` for ``Trainer.add_callback``."""
        self.hooks = list(hooks)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        for hook in self.hooks:
            hook.on_pre_optimizer_step(args, state, control, **kwargs)

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        for hook in self.hooks:
            hook.on_optimizer_step(args, state, control, **kwargs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        for hook in self.hooks:
            hook.on_train_end(args, state, control, **kwargs)


class LocalTrainer:
    """Trains the shared model on one client's rows for ``max_steps`` steps at a given learning rate."""

    def __init__(self, trainer: Trainer, show_progress: bool = True) -> None:
        """Take a built TRL trainer (SFTTrainer or DPOTrainer) over already-prepared data."""
        self.trainer = trainer
        # The default progress/printer callbacks print a metrics dict after every client; the
        # round loop logs one concise line per round instead.
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        self.progress = StepProgress() if show_progress else None
        if self.progress is not None:
            trainer.add_callback(self.progress)

    def train(
        self,
        client_id: int,
        rows: Dataset,
        learning_rate: float,
        seed: int,
        hooks: Sequence[ClientHook] = (),
        max_steps: int | None = None,
    ) -> dict[str, float]:
        """Run local training with the algorithm's ``hooks`` for ``max_steps`` steps (None: the run's
        ``--max_steps``); return train loss, steps and seconds."""
        trainer = self.trainer
        trainer.train_dataset = rows
        trainer.args.learning_rate = learning_rate
        trainer.args.seed = seed
        trainer.args.data_seed = seed
        run_steps = trainer.args.max_steps
        if max_steps is not None:
            trainer.args.max_steps = max_steps
        # A fresh optimizer every round (the server, not the client, carries state across rounds).
        trainer.optimizer = None
        trainer.lr_scheduler = None
        if self.progress is not None:
            self.progress.description = f"client {client_id}"
        # Dropout and the data order draw from torch's RNG: seeding per (client, round) makes every
        # round reproducible on its own, which is what makes resume exact.
        torch.manual_seed(seed)
        callback = HookCallback(hooks) if hooks else None
        if callback is not None:
            trainer.add_callback(callback)
        start = time.perf_counter()
        # Trainer.train() opens with accelerate's free_memory(), a full gc.collect() that walks every
        # object of the run (model, tokenizer, datasets: ~600k) and took 0.33 s of CPU per
        # client-round. Frozen for the call, they are skipped (the collection takes ~0 s); unfrozen
        # afterwards, everything stays collectable as usual (benchmarks/README.md).
        gc.freeze()
        try:
            output = trainer.train()
        finally:
            gc.unfreeze()
            trainer.args.max_steps = run_steps
            if callback is not None:
                trainer.remove_callback(callback)
        return {
            "train_loss": float(output.training_loss),
            "steps": int(output.global_step),
            "seconds": time.perf_counter() - start,
        }

    @torch.no_grad()
    def loss(self, rows: Dataset, seed: int) -> float:
        """The task's training loss of the live model on ``rows``, in eval mode (no dropout, no gradient, no step):
        the trainer's own batches and loss, their mean weighted by rows. The batches are drawn with ``seed`` (as
        ``train`` would draw them) without touching the caller's RNG, so the value depends on nothing else."""
        trainer = self.trainer
        trainer.train_dataset = rows
        trainer.args.seed = seed
        trainer.args.data_seed = seed
        model = trainer.model
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for batch in trainer.get_train_dataloader():
                    device = next(model.parameters()).device
                    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                    size = len(next(iter(batch.values())))
                    with trainer.accelerator.autocast():  # as training runs it (bf16-stored frozen weights need it)
                        total += float(trainer.compute_loss(model, inputs)) * size
                    count += size
        finally:
            model.train(was_training)
        return total / count


@contextmanager
def frozen(params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Leave ``params`` untrained inside the block: out of the optimizer (``requires_grad`` off when it is built)
    and with zero gradients, even where PEFT turns ``requires_grad`` back on (TRL's DPO reference pass
    re-enables the adapter's layers), so gradient clipping never counts them."""
    unique = list({id(param): param for param in params if param.requires_grad}.values())
    handles = []
    try:
        for param in unique:
            handles.append(param.register_hook(torch.zeros_like))  # (a hook needs requires_grad when registered)
            param.requires_grad_(False)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for param in unique:
            param.requires_grad_(True)


def train_client(
    local_trainer: LocalTrainer,
    trainable: Mapping[str, torch.Tensor],
    algorithm: ClientAlgorithm,
    task: RoundTask,
    shard: Dataset | ClientRows,
    start: StateDict,
    payload: Mapping[str, StateDict],
    personal: Mapping[str, torch.Tensor] | None = None,
) -> tuple[ClientUpdate, StateDict]:
    """One client-round: start from ``start``, train on this round's rows; return the update and what the client keeps.

    The single-process simulation and the Flower ClientApp both call this, so a client's round is
    the same computation wherever it runs. ``trainable`` maps the exchanged keys to the live model
    (adapter weights, and merged deltas where the algorithm has them); ``start`` is the state the
    server gave this client (``Aggregator.client_start``, cut to ``task.lora_rank``'s components; a
    merged-delta key it lacks means zero); ``algorithm`` is the client side of ``--fed_alg``;
    ``payload`` is what ``Aggregator.client_payload`` gave (SCAFFOLD's control variates, IFCA's other
    cluster models: ``ClientAlgorithm.choose_start`` may pick the start among them);
    ``personal`` what this client kept from its last round (``ClientAlgorithm.kept_keys``; None the
    first time): its ``personal_keys`` replace the start's before training, or a ``personal_model``'s
    second pass starts from it; ``shard`` the client's data (a ``Dataset``, or its ``ClientRows`` view of
    the run's one tokenised set). The update carries ``ClientAlgorithm.sent_keys`` only, cut to
    the client's rank.
    """
    cid, server_round = task.client_id, task.server_round
    rows = shard.select(sample_examples(len(shard), task.examples_per_round, task.seed, cid, server_round))
    seed = derive_seed(task.seed, cid, server_round)

    def loss_of(state: StateDict) -> float:
        load_start(trainable, state)
        return local_trainer.loss(rows, seed)

    start, chosen = algorithm.choose_start(start, payload, loss_of, cid, server_round, task.seed)
    load_start(trainable, start)  # broadcast
    keys = list(trainable)
    kept = algorithm.kept_keys(keys)
    if personal and not algorithm.personal_model:
        set_state({key: trainable[key] for key in kept}, personal)
    # The hooks see the state the client really starts from: full-rank shapes, the other components zero.
    anchor = {key: pad_rank(trainable[key], key, value) for key, value in start.items()}
    hooks = algorithm.hooks(payload, anchor, trainable, task.lora_rank)
    with frozen([trainable[key] for key in algorithm.frozen_keys(server_round, keys)]):
        metrics = local_trainer.train(cid, rows, task.learning_rate, seed, hooks)
    metrics.update(chosen)
    extras: dict[str, StateDict] = {}
    for hook in hooks:
        extras.update(hook.extras())
        metrics.update(hook.metrics())
    sent = get_state({key: trainable[key] for key in algorithm.sent_keys(server_round, keys)})
    if task.lora_rank:
        sent = slice_rank(sent, task.lora_rank)
    if algorithm.personal_model:
        # The personal pass: from the client's own model (the round's start the first time), same rows and seed.
        load_start(trainable, start)
        if personal:
            set_state({key: trainable[key] for key in kept}, personal)
        own = local_trainer.train(cid, rows, task.learning_rate, seed, algorithm.personal_hooks(anchor, trainable))
        metrics["personal_train_loss"] = own["train_loss"]
        metrics["seconds"] += own["seconds"]
    update = ClientUpdate(cid, sent, len(shard), metrics, extras)
    return update, get_state({key: trainable[key] for key in kept})
