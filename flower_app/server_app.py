"""The ServerApp: the framework's round loop, with each client trained on its own SuperNode.

Sampling, learning-rate schedule, aggregation, checkpoints, ``metrics.jsonl`` and resume are
``federated_learning.runner.run_simulation``'s; ``GridClients`` only replaces training the
clients in-process with messages to the SuperNodes. Outputs go to ``--output_dir`` on the
SuperLink's machine (a relative path is relative to the directory the SuperLink started in).
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from config import validate
from evaluation.training_eval import RoundEvaluator
from federated_learning.runner import load_peft_model, make_run_dir, run_simulation, set_threads, use_bf16
from flower_app.grid_clients import GridClients, map_clients
from flower_app.logs import setup_flower_logging
from flower_app.run_config import parse_run_config
from utils.model import validate_model_source

logger = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every round of the federated fine-tuning the run config describes."""
    setup_flower_logging()
    settings = parse_run_config(context.run_config)
    script_args, fed_args = settings.script_args, settings.fed_args
    dpo = settings.mode == "dpo"
    # Every check that needs no model happens before waiting for nodes or loading the model.
    validate(script_args, fed_args)
    if dpo:
        from main_dpo import validate_dpo_flags

        validate_dpo_flags(script_args)
    validate_model_source(script_args.model_name_or_path)
    set_threads(script_args.torch_threads)
    node_of = map_clients(grid, fed_args.num_clients, settings.node_timeout)
    run_dir = make_run_dir(script_args, fed_args, *([settings.dpo_args] if dpo else []))
    # The server's model holds the global adapter (its initial value, then each round's aggregate),
    # which checkpoints save exactly as the simulation's do. DPO starts from --ref_adapter, if given.
    model, tokenizer = load_peft_model(script_args, script_args.ref_adapter if dpo else None)
    # Evaluated on the server, as the simulation does, on the held-out split the server can load
    # (the bundled datasets ship theirs; with data only on the nodes there is none, and it is skipped).
    bf16 = use_bf16(script_args)
    evaluator = None
    if script_args.eval_samples > 0:
        if dpo:
            from main_dpo import preference_evaluator

            evaluator = preference_evaluator(script_args, settings.dpo_args, tokenizer, bf16)
        else:
            evaluator = RoundEvaluator.from_args(script_args, tokenizer, bf16)
    clients = GridClients(grid, node_of, settings.round_timeout)
    run_simulation(script_args, fed_args, model, None, (), run_dir, evaluator, client_runner=clients)
    logger.info("Flower run %d done; outputs in %s", context.run_id, run_dir.resolve())
