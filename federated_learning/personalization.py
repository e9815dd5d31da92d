"""Every client's own view in the round loop (``--eval_per_client``): the global adapter, the client's personal
model and local fine-tuning, each scored on the client's held-out set.

At every evaluation of the run, for every client (``evaluation.client_eval``):

- ``per_client``: the global model on the client's set (the one the pooled round evaluation
  scores: FedSA-LoRA's has the clients' mean B);
- ``personal`` (methods with a model per client: FedSA-LoRA's own B, Ditto's personal adapter,
  IFCA's cluster): the client's own model, the global adapter with what the client keeps in place
  of it, or the cluster it chose last; a client that has not trained yet has none and is scored
  with the global adapter;
- ``finetuned`` (``--personalize_steps k``, at the final evaluation only): the standard
  personalisation baseline, each client's model (its personal one where the method keeps one,
  else the final global model) fine-tuned for k local steps of ``--batch_size`` x
  ``--gradient_accumulation_steps`` examples of its own rows at ``--learning_rate``, with no
  algorithm hook (what the method never trains, FFA-LoRA's A, stays frozen; a client of
  ``--client_lora_ranks`` fine-tunes the full-rank adapter); the fine-tuned adapters are scored,
  not kept.

Each goes to metrics.jsonl per client (``{"<id>": {metric: value}}``) and summarised over the
clients as ``<view>_<metric>_{mean,worst,best,std}`` (``per_client_eval_accuracy_mean``, say;
each client counts once; ``worst`` is the lowest accuracy, the highest loss); ``per_client_eval.png``
draws the headline metric of every client over the rounds. The model is left holding the global
adapter.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.client_eval import summarise
from federated_learning.client import frozen
from federated_learning.sampling import derive_seed, sample_examples
from federated_learning.state import get_state, set_state
from federated_learning.types import StateDict

if TYPE_CHECKING:
    from evaluation.client_eval import ClientEvaluation
    from federated_learning.round_loop import RoundLoop

logger = logging.getLogger(__name__)

VIEWS = ("per_client", "personal", "finetuned")
"""The metrics.jsonl keys of the per-client scores, in the order they are computed."""


def evaluate_clients(loop: RoundLoop, final: bool) -> dict[str, Any]:
    """The per-client records and summaries of ``loop``'s current state (``final``: the run's last evaluation)."""
    evaluation = loop.client_evaluation
    assert evaluation is not None
    global_params = get_state(loop.trainable)
    clients = range(evaluation.num_clients)
    try:
        view = loop.global_view()  # FedSA-LoRA's global model has the clients' mean B
        if view is not None:
            set_state(loop.trainable, view)
        scores = {client: evaluation.score(loop.model, client) for client in clients}
        set_state(loop.trainable, global_params)
        record = _report("per_client", scores, evaluation)
        personal = {client: personal_model(loop, client, global_params) for client in clients}
        if has_personal_models(loop):
            own = {}
            for client, state in personal.items():
                if state is None:  # no state of its own yet: its model is the global one
                    own[client] = scores[client]
                    continue
                set_state(loop.trainable, state)
                own[client] = evaluation.score(loop.model, client)
                set_state(loop.trainable, global_params)
            record.update(_report("personal", own, evaluation))
        if final and loop.plan.personalize_steps:
            tuned = {}
            for client in clients:
                fine_tune(loop, client, personal[client] or view or global_params)
                tuned[client] = evaluation.score(loop.model, client)
                set_state(loop.trainable, global_params)
            record.update(_report("finetuned", tuned, evaluation))
    finally:
        set_state(loop.trainable, global_params)
    return record


def personal_model(loop: RoundLoop, client: int, global_params: StateDict) -> StateDict | None:
    """``client``'s own model: the server's for it (IFCA's cluster), else the global adapter with what the client
    keeps in place of it (None: it has none yet)."""
    own = loop.aggregator.client_model(client)
    if own is not None:
        return {**global_params, **own}
    kept = loop.personal.get(client)
    return None if kept is None else {**global_params, **kept}


def has_personal_models(loop: RoundLoop) -> bool:
    """Whether ``loop``'s method gives clients models of their own (kept state, or the server's per client)."""
    return loop.client_algorithm.keeps_personal_state() or loop.aggregator.personal_models


def fine_tune(loop: RoundLoop, client: int, start: StateDict) -> None:
    """Train ``client``'s model from ``start`` for ``--personalize_steps`` steps on its rows (left in the model)."""
    if loop.local_trainer is None:
        raise ValueError("--personalize_steps needs the clients' data in this process (the simulation, main_*.py)")
    plan = loop.plan
    set_state(loop.trainable, start)
    shard = loop.shards[client]
    # A round index past the last draws rows and a seed no training round used.
    rows = shard.select(sample_examples(len(shard), plan.personalize_examples, plan.seed, client, plan.num_rounds))
    # What the method never trains stays untrained here too (FFA-LoRA's A).
    untrained = loop.client_algorithm.frozen_keys(plan.num_rounds, list(loop.trainable))
    with frozen([loop.trainable[key] for key in untrained]):
        loop.local_trainer.train(client, rows, plan.learning_rate, derive_seed(plan.seed, client, plan.num_rounds),
                                 max_steps=plan.personalize_steps)


def _report(view: str, scores: dict[int, dict[str, float]], evaluation: ClientEvaluation) -> dict[str, Any]:
    summary = summarise(f"{view}_", scores, evaluation.lower_is_better)
    headline = f"{view}_{evaluation.headline}"
    logger.info("Per-client evaluation, %s: %s mean %.4g, worst client %.4g, best %.4g", view, evaluation.headline,
                summary[f"{headline}_mean"], summary[f"{headline}_worst"], summary[f"{headline}_best"])
    return {view: {str(c): s for c, s in scores.items()}, **summary}


def plot_client_scores(run_dir: Path, metric: str) -> None:
    """``per_client_eval.png``: ``metric`` of every client over the rounds, one panel per view (metrics.jsonl)."""
    from matplotlib.figure import Figure

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    views = [view for view in VIEWS if any(view in r for r in records)]
    if not views:
        return
    fig = Figure(figsize=(5 * len(views), 3.6), layout="constrained")
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    for ax, view in zip(axes, views, strict=True):
        rounds = [r["round"] for r in records if view in r]
        clients = sorted({c for r in records if view in r for c in r[view]}, key=int)
        for client in clients:
            values = [r[view][client].get(metric, float("nan")) if client in r[view] else float("nan")
                      for r in records if view in r]
            ax.plot(rounds, values, marker="o", linewidth=1, label=f"client {client}")
        mean = f"{view}_{metric}_mean"
        ax.plot(rounds, [r.get(mean, float("nan")) for r in records if view in r], color="black", linewidth=2.5,
                label="mean")
        ax.set(title=view, xlabel="round", ylabel=metric)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best", ncol=2 if len(clients) > 10 else 1)
    fig.savefig(run_dir / "per_client_eval.png", dpi=100)
