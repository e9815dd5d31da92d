"""The ServerApp: the framework's round loop, with each client trained on its own SuperNode.

Sampling, learning-rate schedule, aggregation, evaluation, checkpoints, ``metrics.jsonl`` and
resume are the round loop's (``federated_learning.build.build_round_loop``); ``GridClients`` only
replaces training the clients in-process with messages to the SuperNodes. Outputs go to
``--output_dir`` on the SuperLink's machine (a relative path is relative to the directory the
SuperLink started in).
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from config import RunConfig
from federated_learning.aggregators import resolve_fed_alg
from federated_learning.aggregators._hyperparameters import KRUM_RULES, krum_min_clients
from federated_learning.build import (
    build_round_evaluation,
    build_round_loop,
    load_peft_model,
    make_run_dir,
    split_clients,
    use_bf16,
)
from federated_learning.checks import validate_flags
from federated_learning.process import set_threads
from federated_learning.tasks import Task, get_task
from flower_app.grid_clients import GridClients, map_clients
from flower_app.logs import setup_flower_logging
from flower_app.run_config import parse_run_config
from utils.model_source import validate_model_source

logger = logging.getLogger(__name__)

app = ServerApp()


def shard_sizes(task: Task, cfg: RunConfig, exclude: set[int]) -> dict[int, int]:
    """The size of each client's shard of the run's dataset, when the server can load it (the most examples a
    client training on its shard can report); clients in ``exclude`` train on data of their own."""
    if len(exclude) == cfg.fed.num_clients:
        return {}
    try:
        task.check_data(cfg)
        dataset = task.load(cfg)
    except (ValueError, OSError) as err:
        logger.info("the server cannot load the run's dataset (%s): client example counts are not bounded", err)
        return {}
    sizes = {cid: len(rows) for cid, rows in enumerate(split_clients(dataset, cfg)) if cid not in exclude}
    logger.info("client shard sizes (the most examples each may report): %s", sizes)
    return sizes


def refuse_simulation_only(cfg: RunConfig) -> None:
    """A ValueError naming the flag of what runs only in the simulation (main_*.py)."""
    if cfg.script.eval_per_client:
        raise ValueError("--eval_per_client: each client's held-out set and personal model live on its SuperNode, "
                         "which a Flower server does not evaluate; run the per-client evaluation in the simulation "
                         "(main_*.py), or drop the flag")
    if cfg.fed.attack != "none":
        raise ValueError(f"--attack {cfg.fed.attack}: the simulated poisoning runs in the simulation (main_*.py); on "
                         "Flower a malicious client is a SuperNode running its own code")
    if resolve_fed_alg(cfg.fed.fed_alg).name == "ifca":
        raise ValueError("--fed_alg ifca is not validated on Flower yet (no test carries its cluster payloads and "
                         "choices through a deployment); run it in the simulation (main_*.py)")


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every round of the federated fine-tuning the run config describes."""
    setup_flower_logging()
    settings = parse_run_config(context.run_config)
    cfg = settings.cfg
    task = get_task(cfg.task)
    # Every check that needs no model happens before waiting for nodes or loading the model.
    validate_flags(cfg)
    task.validate(cfg)
    refuse_simulation_only(cfg)
    validate_model_source(cfg.script.model_name_or_path)
    set_threads(cfg.script.torch_threads)
    node_of, own_data = map_clients(grid, cfg.fed.num_clients, settings.node_timeout)
    run_dir = make_run_dir(cfg)
    # The server's model holds the global adapter (its initial value, then each round's aggregate),
    # which checkpoints save exactly as the simulation's do, with the task's reference if it has one.
    model, tokenizer = load_peft_model(cfg.script, task.start_adapter(cfg))
    task.prepare_model(model, cfg)
    # Evaluated on the server, as the simulation does, on the held-out split the server can load
    # (the bundled datasets ship theirs; with data only on the nodes there is none, and it is skipped).
    evaluator = build_round_evaluation(task, cfg, tokenizer, use_bf16(cfg.script))
    # Krum's n > 2f + 2 must hold for the replies a round aggregates, not only for the clients it samples.
    byzantine = resolve_fed_alg(cfg.fed.fed_alg).name in KRUM_RULES
    min_fit = max(cfg.fed.min_fit_clients, krum_min_clients(cfg.fed.num_malicious)) if byzantine else \
        cfg.fed.min_fit_clients
    clients = GridClients(grid, node_of, settings.round_timeout, min_fit, settings.node_timeout)
    sizes = shard_sizes(task, cfg, exclude=own_data)
    build_round_loop(cfg, model, None, (), run_dir, evaluator, client_runner=clients, client_sizes=sizes).run()
    logger.info("Flower run %d done; outputs in %s", context.run_id, run_dir.resolve())
