"""Federated Direct Preference Optimization (DPO) of a LoRA adapter.

    python main_dpo.py                      # offline demo: embedded SmolLM2-135M, bundled preference pairs
    python main_dpo.py --config run.yaml    # YAML defaults, CLI flags override
    python main_dpo.py --help               # every flag

The same round loop, sampler, partitions, aggregators and client hooks as ``main_sft.py``; only the
data, the TRL trainer (DPOTrainer) and the evaluation differ. The reference policy is the base model
with the adapter disabled, or with ``--ref_adapter <dir>`` that adapter, which is then also the
starting point (see ``federated_learning.trainers.build_dpo_trainer``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from config import FedArguments, ScriptArguments, make_parser
from evaluation.preference_eval import PreferenceEvaluator, load_heldout_pairs
from federated_learning.runner import run_federated
from federated_learning.trainers import build_dpo_trainer
from utils.dpo_data import load_dpo_dataset, validate_dpo_data_args
from utils.dpo_tokenize import tokenize_dpo

logger = logging.getLogger("main_dpo")

# config.py's defaults are SFT's. These make `python main_dpo.py` a ~5-minute offline demo on two
# CPU cores; every one of them is an ordinary flag (or YAML key) to override.
DPO_DEFAULTS: dict[str, object] = {
    "dataset_name": "bundled/preferences",
    "num_rounds": 5,
    "num_clients": 5,
    "sample_clients": 2,
    "max_steps": 4,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "eval_samples": 100,
}


@dataclass
class DPOArguments:
    """DPO-only flags (``--dpo_beta`` and ``--ref_adapter`` are ScriptArguments, as in OpenFedLLM)."""

    dataset_split: str | None = field(
        default=None,
        metadata={"help": "training split (default: the dataset's usual one: train, or train_sft for "
                          "HuggingFaceH4/ultrafeedback_binarized as OpenFedLLM; train_prefs is its preference split); "
                          "held-out pairs come from the matching test split"},
    )


def parse_dpo_args(argv: Sequence[str] | None = None) -> tuple[ScriptArguments, FedArguments, DPOArguments]:
    """Parse the command line (and an optional ``--config`` YAML) with main_dpo's defaults."""
    parser = make_parser([DPOArguments])
    parser.set_defaults(**DPO_DEFAULTS)
    script_args, fed_args, dpo_args = parser.parse_args_and_config(args=argv)
    return script_args, fed_args, dpo_args


def validate_dpo_flags(script_args: ScriptArguments) -> None:
    """Check ``--dpo_beta`` and ``--ref_adapter`` (what the server needs); raise ValueError naming the flag."""
    if script_args.dpo_beta <= 0:
        raise ValueError(f"--dpo_beta must be positive, got {script_args.dpo_beta}")
    ref = script_args.ref_adapter
    if ref is not None:
        if not (Path(ref) / "adapter_config.json").is_file():
            raise ValueError(f"--ref_adapter {ref!r} holds no adapter_config.json; pass a PEFT adapter folder, "
                             "e.g. a checkpoint-<round> folder of an SFT run")
        logger.info("--ref_adapter %s: reference and starting point; its adapter_config.json sets the LoRA shape "
                    "(--peft_lora_r/alpha/target_modules are not used)", ref)


def validate_dpo_args(script_args: ScriptArguments, dpo_args: DPOArguments) -> None:
    """Check the DPO flags that need no model, data included; raise ValueError naming the flag and the fix."""
    validate_dpo_flags(script_args)
    validate_dpo_data_args(script_args.dataset_name, script_args.local_data_dir, dpo_args.dataset_split)


def preference_evaluator(
    script_args: ScriptArguments, dpo_args: DPOArguments, tokenizer: PreTrainedTokenizerBase, bf16: bool
) -> PreferenceEvaluator:
    """The round evaluation of a DPO run: preference metrics on held-out pairs (main_dpo, the Flower ServerApp)."""
    pairs = load_heldout_pairs(script_args.dataset_name, script_args.local_data_dir, script_args.eval_samples,
                               dpo_args.dataset_split, script_args.seed)
    return PreferenceEvaluator(pairs, tokenizer, script_args.template, script_args.dpo_beta,
                               script_args.seq_length, script_args.eval_batch_size, bf16=bf16)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run federated DPO as the flags say; return the run folder."""
    script_args, fed_args, dpo_args = parse_dpo_args(argv)

    return run_federated(
        script_args, fed_args, dpo_args,
        check=lambda: validate_dpo_args(script_args, dpo_args),
        load=lambda: load_dpo_dataset(script_args.dataset_name, script_args.local_data_dir,
                                      script_args.dataset_sample, dpo_args.dataset_split, script_args.seed),
        prepare=lambda shard, tokenizer: tokenize_dpo(shard, tokenizer, script_args.template, script_args.seq_length),
        build_trainer=build_dpo_trainer,
        build_evaluator=lambda tokenizer, bf16: preference_evaluator(script_args, dpo_args, tokenizer, bf16),
        adapter_dir=script_args.ref_adapter,
    )


if __name__ == "__main__":
    main()
