"""Federated supervised fine-tuning (instruction tuning) of a LoRA adapter.

    python main_sft.py                      # offline demo: embedded SmolLM2-135M, bundled sentiment data
    python main_sft.py --config run.yaml    # YAML defaults, CLI flags override
    python main_sft.py --help               # every flag
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from config import parse_args
from evaluation.training_eval import RoundEvaluator
from federated_learning.runner import run_federated
from federated_learning.trainers import build_sft_trainer
from utils.sft_data import load_sft_dataset, validate_sft_data_args
from utils.sft_tokenize import tokenize_sft


def main(argv: Sequence[str] | None = None) -> Path:
    """Run federated SFT as the flags say; return the run folder."""
    script_args, fed_args = parse_args(argv)

    def evaluator(tokenizer: PreTrainedTokenizerBase, bf16: bool) -> RoundEvaluator:
        return RoundEvaluator.from_args(script_args, tokenizer, bf16)

    return run_federated(
        script_args, fed_args,
        check=lambda: validate_sft_data_args(script_args.dataset_name, script_args.local_data_dir),
        load=lambda: load_sft_dataset(script_args.dataset_name, script_args.local_data_dir,
                                      script_args.dataset_sample, "train", script_args.seed),
        prepare=lambda shard, tokenizer: tokenize_sft(shard, tokenizer, script_args.template, script_args.seq_length),
        build_trainer=build_sft_trainer,
        build_evaluator=evaluator,
    )


if __name__ == "__main__":
    main()
