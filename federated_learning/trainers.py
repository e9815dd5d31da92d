"""What every task's TRL trainer shares: its TrainingArguments and the measured speed-ups of local steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from config import ScriptArguments
from federated_learning.lm_head import use_label_only_head
from utils.model import default_device, store_frozen_linears_in


def common_training_kwargs(script_args: ScriptArguments, output_dir: str | Path, bf16: bool) -> dict[str, Any]:
    """TrainingArguments shared by every task's local training.

    Nothing is saved or reported by the trainer itself (the round loop checkpoints the global
    adapter); the learning rate and seed are set per client-round by ``LocalTrainer``.
    """
    device = default_device()
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": script_args.batch_size,
        "gradient_accumulation_steps": script_args.gradient_accumulation_steps,
        "learning_rate": script_args.learning_rate,
        "lr_scheduler_type": script_args.lr_scheduler_type,
        "optim": script_args.optim,
        "weight_decay": script_args.weight_decay,
        "max_grad_norm": script_args.max_grad_norm,
        "max_steps": script_args.max_steps,
        # transformers 5 renamed gradient_checkpointing (TRL still defaults it to True): set the new name.
        "activation_checkpointing": script_args.gradient_checkpointing,
        "use_cpu": device.type == "cpu",
        "bf16": bf16,
        "seed": script_args.seed,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
    }


def speed_up_local_steps(trainer: Trainer, bf16: bool) -> None:
    """The measured speed-ups of local steps (benchmarks/README.md), applied to a built trainer.

    Off CUDA, TRL's fused LM head scores every position in fp32 tiles and computes per-step metrics
    this project never logs; the label-only head scores labelled positions only and skips them.
    Under bf16 autocast, frozen linear weights stored in bf16 are not re-cast at every forward (-6%).
    With LocalTrainer's gc.freeze, the SFT step went from 1.63x to 0.88x a bare PyTorch loop, DPO
    from 1.52x to 0.78x. Neither changes what is computed (tests/test_lm_head.py, test_model_dtype.py).
    """
    use_label_only_head(trainer.model, ("log_sum_sq_probs",) if getattr(trainer, "use_weighting", False) else ())
    if bf16:
        store_frozen_linears_in(trainer.model, torch.bfloat16)
