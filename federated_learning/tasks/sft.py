"""Federated supervised fine-tuning (instruction tuning): TRL's SFTTrainer on instruction/response rows.

Data: ``utils.sft_data`` (OpenFedLLM's hub datasets, bundled and local files), tokenised once per
run with the loss on the response only (``utils.sft_tokenize``). The round evaluation is the
held-out loss and perplexity of the dataset's test split, plus the registry benchmark that scores
that dataset, if one does (``bundled_sentiment`` for ``bundled/fin_sentiment``: accuracy and F1 of
generated labels; ``bundled_arithmetic``: exact match of the final number).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import RunConfig
from federated_learning.tasks.base import RoundBenchmark, Task, register

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase
    from trl import SFTTrainer


@register
class SFTTask(Task):
    """Instruction tuning of the LoRA adapter."""

    name = "sft"

    def validate(self, cfg: RunConfig) -> None:
        """``--ref_adapter`` is DPO's (it is a shared flag only for OpenFedLLM's scripts): refuse it here."""
        if cfg.script.ref_adapter is not None:
            raise ValueError("--ref_adapter is a DPO flag (main_dpo.py); SFT always starts from a fresh LoRA "
                             "adapter: drop --ref_adapter")

    def check_data(self, cfg: RunConfig, data_path: str | None = None) -> None:
        """``--dataset_name`` / ``--local_data_dir`` (or a node's own data) name usable SFT data."""
        from utils.sft_data import validate_sft_data_args

        validate_sft_data_args(*self.data_source(cfg, data_path))

    def load(self, cfg: RunConfig, data_path: str | None = None) -> Dataset:
        """Instruction/response rows of the training split, shuffled with ``--seed``, ``--dataset_sample`` of them."""
        from utils.sft_data import load_sft_dataset

        name, local_dir = self.data_source(cfg, data_path)
        return load_sft_dataset(name, local_dir, cfg.script.dataset_sample, "train", cfg.script.seed)

    def tokenize(self, rows: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: RunConfig) -> Dataset:
        """``input_ids`` and ``labels`` (-100 on prompt tokens)."""
        from utils.sft_tokenize import tokenize_sft

        return tokenize_sft(rows, tokenizer, cfg.script.template, cfg.script.seq_length)

    def build_trainer(self, model: PeftModel, tokenizer: PreTrainedTokenizerBase, tokenized: Dataset,
                      cfg: RunConfig, output_dir: Path, bf16: bool) -> SFTTrainer:
        """An SFTTrainer over pre-tokenised rows (``input_ids`` + ``labels``), built once per run."""
        from trl import SFTConfig, SFTTrainer
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        from federated_learning.trainers import common_training_kwargs, speed_up_local_steps

        args = SFTConfig(
            **common_training_kwargs(cfg.script, output_dir, bf16),
            max_length=cfg.script.seq_length,
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

    def round_benchmarks(self, cfg: RunConfig) -> list[RoundBenchmark]:
        """Held-out loss, then the benchmark of the training dataset's own task (if it has one)."""
        from evaluation.registry import benchmarks_scoring

        own = benchmarks_scoring(cfg.script.dataset_name)
        return [RoundBenchmark("heldout_loss"), *(RoundBenchmark(name) for name in own)]

    def eval_settings(self, cfg: RunConfig) -> dict[str, Any]:
        """The held-out split is the training dataset's."""
        return {"sft_dataset": cfg.script.dataset_name}
