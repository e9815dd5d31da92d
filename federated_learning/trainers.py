"""Build the TRL trainer that every client of a run shares (see ``client.LocalTrainer``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import load_peft_weights
from transformers import PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import use_adapter

from config import ScriptArguments
from federated_learning.lm_head import use_label_only_head
from utils.model import default_device, store_frozen_linears_in


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
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=tokenized,
        processing_class=tokenizer,
        # Pads to the longest sequence of each batch; labels are already -100 on prompt tokens.
        data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id),
    )
    speed_up_local_steps(trainer, bf16)
    return trainer


def speed_up_local_steps(trainer: SFTTrainer | DPOTrainer, bf16: bool) -> None:
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


REF_ADAPTER = "ref"
"""Name of the frozen adapter DPOTrainer uses as reference when the model has one (``--ref_adapter``)."""


@contextlib.contextmanager
def reference_policy(model: PeftModel) -> Iterator[None]:
    """Make ``model`` compute the DPO reference policy inside the block, exactly as DPOTrainer does.

    With a ``ref`` adapter that adapter is active (``--ref_adapter``), otherwise every adapter is
    disabled, leaving the base model; the trained adapter is restored on exit.
    """
    with use_adapter(model, REF_ADAPTER if REF_ADAPTER in model.peft_config else None):
        yield


def build_dpo_trainer(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, tokenized: Dataset, script_args: ScriptArguments,
    output_dir: str | Path, bf16: bool,
) -> DPOTrainer:
    """A DPOTrainer over pre-tokenised pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``), built once per run.

    The reference policy is fixed for the whole run and never a second copy of the base model:

    - default: the base model, the adapter disabled (OpenFedLLM's meaning under PEFT);
    - ``--ref_adapter <dir>``: the adapter saved in ``<dir>`` (``model`` must start from it too).

    Given a PeftModel, DPOTrainer copies its *current* adapter into a frozen ``ref`` adapter. Built
    once, before round 1, that copy never follows the global adapter; here it is removed in the
    default mode (the base model is the reference) and reloaded from ``<dir>`` otherwise, so the
    reference does not depend on what the model held when the trainer was built.
    """
    kwargs = common_training_kwargs(script_args, output_dir, bf16)
    if script_args.batch_size % 2 == 0:
        # A DPO step scores a chosen and a rejected answer per pair: 2 x batch_size sequences. Half the
        # pairs per micro-batch and twice the accumulation keep the pairs per step and the gradient
        # (the loss is a mean over equal-sized micro-batches) while holding no more sequences at once
        # than an SFT step of the same --batch_size.
        kwargs["per_device_train_batch_size"] = script_args.batch_size // 2
        kwargs["gradient_accumulation_steps"] = 2 * script_args.gradient_accumulation_steps
    args = DPOConfig(
        **kwargs,
        beta=script_args.dpo_beta,
        max_length=script_args.seq_length,  # prompt + answer; the rows are already cut to it
    )
    # DPOTrainer tokenises the dataset it is built with; the pre-tokenised rows of each client-round
    # are swapped in by LocalTrainer, so it is given one decoded row only.
    first = tokenized[0]
    placeholder = Dataset.from_dict({
        "prompt": [tokenizer.decode(first["prompt_ids"])],
        "chosen": [tokenizer.decode(first["chosen_ids"])],
        "rejected": [tokenizer.decode(first["rejected_ids"])],
    })
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=placeholder, processing_class=tokenizer)
    if REF_ADAPTER not in model.peft_config:
        raise RuntimeError("DPOTrainer did not add its 'ref' adapter; this TRL version is not supported")
    if script_args.ref_adapter is None:
        model.delete_adapter(REF_ADAPTER)
    else:
        weights = load_peft_weights(script_args.ref_adapter, device=str(next(model.parameters()).device))
        loaded = set_peft_model_state_dict(model, weights, adapter_name=REF_ADAPTER)
        if loaded.unexpected_keys:
            raise ValueError(f"--ref_adapter {script_args.ref_adapter}: {len(loaded.unexpected_keys)} weights do not "
                             f"fit the model, e.g. {loaded.unexpected_keys[0]}; pass an adapter trained on this model")
    trainer.train_dataset = tokenized
    speed_up_local_steps(trainer, bf16)
    return trainer

