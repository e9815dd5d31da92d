"""Checks of a run's flags that need no model and no data, run before anything heavy loads.

Each failure is a ValueError naming the flag and the fix; the command line prints it as one line
(``federated_learning.cli``). A task's own flags and its data flags are the task's checks
(``Task.validate``, ``Task.check_data``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from config import RunConfig
from federated_learning.aggregators import resolve_fed_alg
from federated_learning.aggregators._hyperparameters import RULES, check_hyperparameters

CLIENT_WEIGHTINGS = ("num_examples", "uniform")


def _check_writable(path: str) -> None:
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target):
            pass
    except OSError as err:
        raise ValueError(f"--output_dir {path!r} cannot be written ({err.strerror}); choose a writable folder") from err


def validate_flags(cfg: RunConfig) -> None:
    """Check the shared flags of ``cfg``; raise ValueError naming the flag and the fix."""
    from utils.templates import get_template

    script, fed = cfg.script, cfg.fed
    fed_alg = resolve_fed_alg(fed.fed_alg)
    get_template(script.template)
    positive = {
        "--num_clients": fed.num_clients,
        "--sample_clients": fed.sample_clients,
        "--num_rounds": fed.num_rounds,
        "--max_steps": script.max_steps,
        "--batch_size": script.batch_size,
        "--seq_length": script.seq_length,
        "--gradient_accumulation_steps": script.gradient_accumulation_steps,
        "--peft_lora_r": script.peft_lora_r,
        "--save_model_freq": fed.save_model_freq,
        "--eval_batch_size": script.eval_batch_size,
    }
    for flag, value in positive.items():
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    for flag, value in (("--eval_samples", script.eval_samples), ("--eval_every", script.eval_every)):
        if value < 0:
            raise ValueError(f"{flag} must be 0 or more, got {value}")
    if fed.sample_clients > fed.num_clients:
        raise ValueError(
            f"--sample_clients {fed.sample_clients} exceeds --num_clients {fed.num_clients}; "
            "sample at most as many clients as there are"
        )
    k = fed_alg.local_client
    if k is not None and k >= fed.num_clients:
        raise ValueError(
            f"--fed_alg {fed.fed_alg}: client {k} does not exist with --num_clients {fed.num_clients}; "
            f"use local0 .. local{fed.num_clients - 1}"
        )
    check_hyperparameters(**{name: getattr(fed, name) for name in RULES})
    if fed.client_weighting not in CLIENT_WEIGHTINGS:
        choices = " or ".join(CLIENT_WEIGHTINGS)
        raise ValueError(f"--client_weighting {fed.client_weighting!r} is unknown; use {choices}")
    if not fed.max_update_norm >= 0:
        raise ValueError(f"--max_update_norm must be 0 (no bound) or positive, got {fed.max_update_norm}")
    if script.load_in_8bit and script.load_in_4bit:
        raise ValueError("--load_in_8bit and --load_in_4bit are exclusive; pass only one of them")
    if not script.use_peft:
        raise ValueError("--use_peft is required: clients exchange LoRA adapters (full fine-tuning is not supported)")
    if script.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {script.learning_rate}")
    if script.resume_from_checkpoint is not None and not Path(script.resume_from_checkpoint).is_dir():
        raise ValueError(f"--resume_from_checkpoint {script.resume_from_checkpoint!r} is not a folder; "
                         "pass a checkpoint-<round> folder of an earlier run")
    _check_writable(script.output_dir)
