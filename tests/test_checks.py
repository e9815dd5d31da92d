"""Flag checks before any work: each bad value is one ValueError or FlagError naming the flag and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated_learning.checks import (
    CLIENT_RANK_ALGORITHMS,
    FRESH_FACTOR_ALGORITHMS,
    OPTIMIZERS,
    SCHEDULERS,
    validate_flags,
)
from federated_learning.cli import parse_run
from utils.flags import FlagError


def check(tmp_path: Path, *args: str, task: str = "sft") -> None:
    validate_flags(parse_run(task, ["--output_dir", str(tmp_path), *args]))


def test_the_listed_optimizers_and_schedulers_are_transformers_own() -> None:
    # checks.py lists them to spare the ~9 s import of transformers.training_args before every error
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert sorted(OPTIMIZERS) == sorted(name.value for name in OptimizerNames)
    assert sorted(SCHEDULERS) == sorted(name.value for name in SchedulerType)


def test_the_listed_rank_algorithms_are_the_classes_that_support_ranks() -> None:
    from federated_learning.aggregators._registry import supporting_client_ranks

    assert list(CLIENT_RANK_ALGORITHMS) == supporting_client_ranks()


def test_the_listed_fresh_factor_algorithms_are_the_classes_that_make_new_factors() -> None:
    from federated_learning.aggregators._registry import with_fresh_factors

    assert list(FRESH_FACTOR_ALGORITHMS) == with_fresh_factors()


@pytest.mark.parametrize(("args", "message"), [
    (["--split_strategy", "dirichet"], "--split_strategy 'dirichet' is unknown; use one of: iid, dirichlet"),
    (["--torch_dtype", "fp16"], "--torch_dtype 'fp16' is unknown; use one of: auto, float32, bfloat16, float16"),
    (["--optim", "adam"], "--optim 'adam' is unknown; use one of: adamw_torch,"),
    (["--lr_scheduler_type", "cosin"], "--lr_scheduler_type 'cosin' is unknown; use one of: linear, cosine,"),
    (["--client_weighting", "equal"], "--client_weighting 'equal' is unknown; use one of: num_examples, uniform"),
    (["--peft_lora_dropout", "1"], "--peft_lora_dropout must be in [0, 1), got 1.0"),
    (["--peft_lora_alpha", "0"], "--peft_lora_alpha must be positive, got 0"),
    (["--dirichlet_alpha", "nan"], "--dirichlet_alpha must be positive, got nan"),
    (["--shards_per_client", "0"], "--shards_per_client must be at least 1, got 0"),
    (["--dataset_sample", "-5"], "--dataset_sample must be 0 or more, got -5"),
    (["--weight_decay", "nan"], "--weight_decay must be 0 or more, got nan"),
    (["--max_grad_norm", "-1"], "--max_grad_norm must be 0 or more, got -1.0"),
    (["--min_learning_rate=-1e-6"], "--min_learning_rate must be 0 or more, got -1e-06"),
    (["--torch_threads", "-1"], "--torch_threads must be 0 (one per CPU) or more, got -1"),
    (["--learning_rate", "nan"], "--learning_rate must be positive, got nan"),
    (["--max_update_norm", "-1"], "--max_update_norm must be 0 (no bound) or positive, got -1.0"),
    (["--peft_target_modules", "q_proj,lm_head"], "--peft_target_modules names lm_head: TRL's trainers refuse"),
    (["--fed_alg", "local03"], "--fed_alg 'local03' is unknown"),
    (["--fed_alg", "local5", "--num_clients", "5", "--sample_clients", "2"],
     "--fed_alg local5: client 5 does not exist with --num_clients 5; use local0 .. local4"),
    (["--fed_alg", "scaffold", "--client_lora_ranks", "2,4,8"],
     "--client_lora_ranks: --fed_alg scaffold trains every client at the global rank; use one of fedavg, fedprox"),
    (["--client_lora_ranks", "2,4"], "--client_lora_ranks 2,4: the largest rank (4) must be the global adapter's"),
    (["--upload_codec", "zstd"], "--upload_codec 'zstd' is unknown; use one of: none, bf16, fp16, int8, topk"),
    (["--download_codec", "topk"], "--download_codec topk: top-k compresses updates only"),
    (["--download_codec", "int4"], "--download_codec 'int4' is unknown; use one of: none, bf16, fp16, int8"),
    (["--int8_scale", "column"], "--int8_scale 'column' is unknown; use one of: tensor, row"),
    (["--topk_fraction", "0"], "--topk_fraction must be in (0, 1], got 0.0"),
    (["--topk_fraction", "1.5"], "--topk_fraction must be in (0, 1], got 1.5"),
    (["--comm_budget_mb", "nan"], "--comm_budget_mb must be 0 (no budget) or positive, got nan"),
    (["--upload_codec", "topk", "--fed_alg", "flora"], "--upload_codec topk: --fed_alg flora starts every round from"),
])
def test_bad_values_name_the_flag(tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        check(tmp_path, *args)
    assert str(err.value).startswith(message), err.value


def test_the_dropped_lm_head_suggestion_keeps_the_other_modules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. --peft_target_modules q_proj,v_proj$"):
        check(tmp_path, "--peft_target_modules", "q_proj,lm_head,v_proj")


def test_the_defaults_pass(tmp_path: Path) -> None:
    check(tmp_path)
    check(tmp_path, task="dpo")


@pytest.mark.parametrize(("yaml", "message"), [
    ("num_rounds: 1.5\n", "--config: num_rounds is 1.5, not int"),
    ("learning_rate: abc\n", "argument --learning_rate/--learning-rate: invalid float value: 'abc'"),  # argparse's
    ("use_peft: 1\n", "--config: use_peft is 1, not bool"),
    ("num_clients: true\n", "--config: num_clients is True, not int"),
    ("fed_alg:\n", "--config: fed_alg may not be empty"),
])
def test_yaml_values_of_the_wrong_type_are_refused(tmp_path: Path, yaml: str, message: str) -> None:
    (tmp_path / "run.yaml").write_text(yaml)
    with pytest.raises(FlagError) as err:
        parse_run("sft", ["--config", str(tmp_path / "run.yaml")])
    assert str(err.value) == message


def test_a_whole_number_in_yaml_becomes_a_float_flag(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("learning_rate: 1\nnum_rounds: 3\n")
    cfg = parse_run("sft", ["--config", str(tmp_path / "run.yaml")])
    assert type(cfg.script.learning_rate) is float and cfg.script.learning_rate == 1.0
    assert cfg.fed.num_rounds == 3


def test_config_without_a_file_says_so() -> None:
    with pytest.raises(FlagError, match=r"^--config needs a YAML file, e\.g\. --config training_scripts"):
        parse_run("sft", ["--num_rounds", "2", "--config"])
