"""Federated supervised fine-tuning (instruction tuning) of a LoRA adapter.

    python main_sft.py                      # offline demo: embedded SmolLM2-135M, bundled sentiment data
    python main_sft.py --config run.yaml    # YAML defaults, CLI flags override
    python main_sft.py --help               # every flag
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from config import parse_args, validate
from federated_learning.client import LocalTrainer
from federated_learning.partition import split_dataset
from federated_learning.runner import load_peft_model, make_run_dir, run_simulation, set_threads, setup_logging, use_bf16
from federated_learning.trainers import build_sft_trainer
from utils.model import validate_model_source
from utils.sft_data import load_sft_dataset, validate_sft_data_args
from utils.sft_tokenize import tokenize_sft

logger = logging.getLogger("main_sft")


def main(argv: Sequence[str] | None = None) -> Path:
    """Run federated SFT as the flags say; return the run folder."""
    script_args, fed_args = parse_args(argv)
    setup_logging()
    # Every check that needs no model happens before the (slow) model load.
    validate(script_args, fed_args)
    validate_sft_data_args(script_args.dataset_name, script_args.local_data_dir)
    validate_model_source(script_args.model_name_or_path)
    threads = set_threads(script_args.torch_threads)

    dataset = load_sft_dataset(
        script_args.dataset_name, script_args.local_data_dir, script_args.dataset_sample, "train", script_args.seed
    )
    shards = split_dataset(
        dataset, fed_args.num_clients, fed_args.split_strategy, script_args.seed,
        partition_column=fed_args.partition_column, alpha=fed_args.dirichlet_alpha,
    )
    run_dir = make_run_dir(script_args, fed_args)
    model, tokenizer = load_peft_model(script_args)
    tokenized = [tokenize_sft(s, tokenizer, script_args.template, script_args.seq_length) for s in shards]
    bf16 = use_bf16(script_args)
    logger.info("%d clients, %d training examples; %d threads, bf16 autocast %s", len(shards), len(dataset), threads, bf16)
    trainer = build_sft_trainer(model, tokenizer, tokenized[0], script_args, run_dir / "trainer", bf16)

    from evaluation.training_eval import RoundEvaluator

    evaluator = RoundEvaluator(
        script_args.dataset_name, tokenizer, script_args.template, script_args.local_data_dir,
        num_samples=script_args.eval_samples, batch_size=script_args.eval_batch_size,
        seq_length=script_args.seq_length, seed=script_args.seed,
    )
    with logging_redirect_tqdm():
        run_simulation(script_args, fed_args, model, LocalTrainer(trainer), tokenized, run_dir, evaluator)
    return run_dir


if __name__ == "__main__":
    main()
