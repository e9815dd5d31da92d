"""Checks of a run's flags that need no model and no data, run before anything heavy loads.

Each failure is a ValueError naming the flag and the fix; the command line prints it as one line
(``federated_learning.cli``). A task's own flags and its data flags are the task's checks
(``Task.validate``, ``Task.check_data``).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from config import (
    ATTACKS,
    CLIENT_WEIGHTINGS,
    DOWNLOAD_CODECS,
    INT8_SCALES,
    SPLIT_STRATEGIES,
    TORCH_DTYPES,
    UPDATE_NORM_BOUNDS,
    UPLOAD_CODECS,
    FedArguments,
    RunConfig,
)
from federated_learning.aggregators import resolve_fed_alg
from federated_learning.aggregators._hyperparameters import (
    KRUM_RULES,
    RULES,
    check_hyperparameters,
    krum_min_clients,
    trimmed_per_side,
)
from federated_learning.aggregators._registry import aggregator_class

# transformers' OptimizerNames and SchedulerType values. Importing them takes ~9 s here, longer than
# every other check together, so they are listed; tests/test_cli.py keeps the lists equal to the enums.
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor", "adamw_anyprecision",
    "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit", "adamw_8bit",
    "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit",
    "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise",
    "stable_adamw",
)
# The built-in --fed_alg names whose aggregation takes clients of lower rank (supports_client_ranks), so that they
# pass without importing the algorithm classes (torch and PEFT: ~6 s here); any other name is asked, which only a
# refusal pays for. tests/test_checks.py keeps this equal to the classes.
CLIENT_RANK_ALGORITHMS = ("fedavg", "fedprox", "flexlora", "flora", "hetlora")
# The built-in ones whose rounds start clients from new factors (Aggregator.fresh_factors), listed for the same reason.
FRESH_FACTOR_ALGORITHMS = ("flexlora", "flora")
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy",
)


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{flag} {value!r} is unknown; use one of: {', '.join(choices)}")


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
    for flag, value in (("--eval_samples", script.eval_samples), ("--eval_every", script.eval_every),
                        ("--dataset_sample", script.dataset_sample), ("--weight_decay", script.weight_decay),
                        ("--max_grad_norm", script.max_grad_norm), ("--min_learning_rate", script.min_learning_rate)):
        if not value >= 0:
            raise ValueError(f"{flag} must be 0 or more, got {value}")
    for flag, value in (("--eval_per_client", script.eval_per_client),
                        ("--personalize_steps", script.personalize_steps)):
        if value < 0:
            raise ValueError(f"{flag} must be 0 (off) or more, got {value}")
    if script.personalize_steps and not script.eval_per_client:
        raise ValueError("--personalize_steps fine-tunes each client's model for the per-client evaluation; pass "
                         "--eval_per_client N too (held-out examples per client)")
    if script.eval_per_client and not script.eval_samples:
        raise ValueError("--eval_per_client needs the round evaluation, which --eval_samples 0 turns off; pass "
                         "--eval_samples N (or drop --eval_per_client)")
    if script.torch_threads < 0:
        raise ValueError(f"--torch_threads must be 0 (one per CPU) or more, got {script.torch_threads}")
    _choice("--split_strategy", fed.split_strategy, SPLIT_STRATEGIES)
    _choice("--torch_dtype", script.torch_dtype, TORCH_DTYPES)
    _choice("--optim", script.optim, OPTIMIZERS)
    _choice("--lr_scheduler_type", script.lr_scheduler_type, SCHEDULERS)
    _choice("--client_weighting", fed.client_weighting, CLIENT_WEIGHTINGS)
    _choice("--upload_codec", fed.upload_codec, UPLOAD_CODECS)
    if fed.download_codec == "topk":
        raise ValueError("--download_codec topk: top-k compresses updates only (it needs a residual to feed back); "
                         f"use one of: {', '.join(DOWNLOAD_CODECS)}")
    _choice("--download_codec", fed.download_codec, DOWNLOAD_CODECS)
    _choice("--int8_scale", fed.int8_scale, INT8_SCALES)
    if fed.upload_codec == "topk" and fed_alg.name in FRESH_FACTOR_ALGORITHMS:
        raise ValueError(f"--upload_codec topk: --fed_alg {fed.fed_alg} starts every round from new LoRA factors, in "
                         "which a client's error-feedback residual from the last round's factors means nothing; use "
                         "bf16, fp16 or int8, or another algorithm")
    if not 0 < fed.topk_fraction <= 1:
        raise ValueError(f"--topk_fraction must be in (0, 1], got {fed.topk_fraction}")
    if not fed.comm_budget_mb >= 0:
        raise ValueError(f"--comm_budget_mb must be 0 (no budget) or positive, got {fed.comm_budget_mb}")
    if not 0 <= script.peft_lora_dropout < 1:
        raise ValueError(f"--peft_lora_dropout must be in [0, 1), got {script.peft_lora_dropout}")
    if not script.peft_lora_alpha > 0:
        raise ValueError(f"--peft_lora_alpha must be positive, got {script.peft_lora_alpha}")
    if not fed.dirichlet_alpha > 0:
        raise ValueError(f"--dirichlet_alpha must be positive, got {fed.dirichlet_alpha}")
    if fed.shards_per_client < 1:
        raise ValueError(f"--shards_per_client must be at least 1, got {fed.shards_per_client}")
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
    if fed_alg.name == "ifca":
        if fed.ifca_clusters > fed.sample_clients:
            raise ValueError(f"--ifca_clusters {fed.ifca_clusters} exceeds --sample_clients {fed.sample_clients}: a "
                             "round could not reach every cluster; use at most as many clusters as sampled clients")
        if (fed.upload_codec, fed.download_codec) != ("none", "none"):
            raise ValueError("--fed_alg ifca sends every cluster adapter uncompressed; drop --upload_codec and "
                             "--download_codec (none)")
    if not fed.max_update_norm >= 0:
        raise ValueError(f"--max_update_norm must be 0 (no bound) or positive, got {fed.max_update_norm}")
    _choice("--update_norm_bound", fed.update_norm_bound, UPDATE_NORM_BOUNDS)
    if fed.update_norm_bound == "clip" and not fed.max_update_norm:
        raise ValueError("--update_norm_bound clip needs the bound: pass --max_update_norm C (> 0)")
    if not 1 <= fed.min_fit_clients <= fed.sample_clients:
        raise ValueError(f"--min_fit_clients must be from 1 to --sample_clients {fed.sample_clients}, got "
                         f"{fed.min_fit_clients}")
    _check_robust(fed, fed_alg.name)
    _check_attack(fed, fed_alg.name)
    if script.load_in_8bit and script.load_in_4bit:
        raise ValueError("--load_in_8bit and --load_in_4bit are exclusive; pass only one of them")
    if not script.use_peft:
        raise ValueError("--use_peft is required: clients exchange LoRA adapters (full fine-tuning is not supported)")
    modules = [m.strip() for m in script.peft_target_modules.split(",")]
    if "lm_head" in modules:
        raise ValueError("--peft_target_modules names lm_head: TRL's trainers refuse an adapter on the output layer "
                         f"(the embeddings it is tied to in most models); drop it, e.g. --peft_target_modules "
                         f"{','.join(m for m in modules if m != 'lm_head') or 'q_proj,v_proj'}")
    if not script.learning_rate > 0:
        raise ValueError(f"--learning_rate must be positive, got {script.learning_rate}")
    if script.resume_from_checkpoint is not None and not Path(script.resume_from_checkpoint).is_dir():
        raise ValueError(f"--resume_from_checkpoint {script.resume_from_checkpoint!r} is not a folder; "
                         "pass a checkpoint-<round> folder of an earlier run")
    if fed.client_lora_ranks is not None:
        client_ranks(cfg)
        name = resolve_fed_alg(fed.fed_alg).name
        if name not in CLIENT_RANK_ALGORITHMS and not aggregator_class(name, fed.fedopt_variant).supports_client_ranks:
            raise ValueError(f"--client_lora_ranks: --fed_alg {fed.fed_alg} trains every client at the global rank; "
                             f"use one of {', '.join(CLIENT_RANK_ALGORITHMS)}, or drop the flag")
    _check_writable(script.output_dir)


def _check_robust(fed: FedArguments, name: str) -> None:
    """Krum's n > 2f + 2 and a trimmed mean that trims something, for the clients sampled per round."""
    n, f = fed.sample_clients, fed.num_malicious
    if name in KRUM_RULES and n < krum_min_clients(f):
        raise ValueError(f"--fed_alg {name} needs --sample_clients > 2 --num_malicious + 2 (Blanchard et al.'s "
                         f"n > 2f + 2), got {n} clients for f = {f}; sample at least {krum_min_clients(f)}")
    if name == "fedtrimmedavg" and fed.trim_fraction > 0 and trimmed_per_side(n, fed.trim_fraction) == 0:
        raise ValueError(f"--trim_fraction {fed.trim_fraction:g} of --sample_clients {n} trims nothing (floor(β·n) = "
                         f"0); sample at least {math.ceil(1 / fed.trim_fraction - 1e-9)} clients, or raise it")


def parse_attack_clients(spec: str, num_clients: int) -> frozenset[int]:
    """``--attack_clients`` "0,3" -> {0, 3}; a ValueError naming the flag for anything but existing client ids."""
    try:
        ids = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError as err:
        raise ValueError(f"--attack_clients {spec!r}: give client ids separated by commas, e.g. 0,3") from err
    if not ids or any(not 0 <= cid < num_clients for cid in ids):
        raise ValueError(f"--attack_clients {spec!r}: ids must be 0 .. {num_clients - 1} (--num_clients {num_clients})")
    return frozenset(ids)


def _check_attack(fed: FedArguments, name: str) -> None:
    """``--attack``: a known kind, a positive scale, existing clients; not with IFCA (a client's start is its
    cluster's, which the attack does not see)."""
    _choice("--attack", fed.attack, ATTACKS)
    if fed.attack == "none":
        return
    if not (math.isfinite(fed.attack_scale) and fed.attack_scale > 0):
        raise ValueError(f"--attack_scale must be a positive number, got {fed.attack_scale}")
    parse_attack_clients(fed.attack_clients, fed.num_clients)
    if name == "ifca":
        raise ValueError("--attack: IFCA's clients train the cluster they choose, which the simulated attack does "
                         "not see; use another --fed_alg")


def client_ranks(cfg: RunConfig) -> dict[int, int]:
    """{client id: LoRA rank} from ``--client_lora_ranks`` (empty without it: every client at ``--peft_lora_r``)."""
    spec = cfg.fed.client_lora_ranks
    return {} if spec is None else parse_client_ranks(spec, cfg.fed.num_clients, cfg.script.peft_lora_r)


def parse_client_ranks(spec: str, num_clients: int, max_rank: int) -> dict[int, int]:
    """``--client_lora_ranks``: "4,8,16" (cycled over client ids) or a JSON file {client id: rank} -> {id: rank}.

    Raise a ValueError naming the flag: ranks must be whole numbers from 1 to ``max_rank`` (``--peft_lora_r``),
    the largest of them equal to it, and a JSON file must give every client a rank.
    """
    flag = f"--client_lora_ranks {spec}"
    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{flag}: cannot read it as JSON ({err}); give a file like {{\"0\": 4}}") from err
        if not isinstance(raw, dict):
            raise ValueError(f"{flag}: the file must map client ids to ranks, like {{\"0\": 4, \"1\": 8}}")
        try:
            ranks = {int(k): v for k, v in raw.items()}
        except ValueError as err:
            raise ValueError(f"{flag}: a key is not a client id ({err})") from err
        missing = sorted(set(range(num_clients)) - ranks.keys())
        unknown = sorted(ranks.keys() - set(range(num_clients)))
        if missing or unknown:
            raise ValueError(f"{flag}: give a rank to exactly the clients 0..{num_clients - 1} "
                             f"({'missing ' + str(missing[:5]) if missing else 'unknown ' + str(unknown[:5])})")
    else:
        try:
            cycle = [int(part) for part in spec.split(",")]
        except ValueError as err:
            raise ValueError(f"{flag}: give whole numbers separated by commas (e.g. 4,8,16) or a JSON file") from err
        ranks = {cid: cycle[cid % len(cycle)] for cid in range(num_clients)}
    bad = sorted({r for r in ranks.values() if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= max_rank},
                 key=str)
    if bad:
        raise ValueError(f"{flag}: ranks must be whole numbers from 1 to --peft_lora_r {max_rank}, got {bad[0]!r}")
    if max(ranks.values()) != max_rank:
        raise ValueError(f"{flag}: the largest rank ({max(ranks.values())}) must be the global adapter's; pass "
                         f"--peft_lora_r {max(ranks.values())}")
    return ranks
