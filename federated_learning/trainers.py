"""Build the TRL trainer that every client of a run shares (see ``client.LocalTrainer``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from config import ScriptArguments
from utils.model import default_device


def common_training_kwargs(script_args: ScriptArguments, output_dir: str | Path, bf16: bool) -> dict[str, Any]:
    """TrainingArguments shared by SFT and DPO local training.

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


def build_sft_trainer(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    tokenized: Dataset,
    script_args: ScriptArguments,
    output_dir: str | Path,
    bf16: bool,
) -> SFTTrainer:
    """An SFTTrainer over pre-tokenised rows (``input_ids`` + ``labels``), built once per run."""
    args = SFTConfig(
        **common_training_kwargs(script_args, output_dir, bf16),
        max_length=script_args.seq_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        packing=False,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=tokenized,
        processing_class=tokenizer,
        # Pads to the longest sequence of each batch; labels are already -100 on prompt tokens.
        data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id),
    )
