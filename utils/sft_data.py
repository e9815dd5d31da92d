"""SFT datasets: load a hub, local or bundled dataset as ``instruction`` / ``response`` rows.

Reproduces OpenFedLLM's ``get_dataset`` + ``process_sft_dataset``: the same hub names (those whose
hub copy moved load the live one: ``SFT_ALIASES``), the same column mappings (alpaca inputs
appended with a space, MathInstruct deduplicated by instruction), then ``shuffle(seed=--seed)``
(2023 by default, OpenFedLLM's fixed seed) and the first ``dataset_sample`` rows. Differences, on
purpose: ``--local_data_dir`` folders are read file by file (json/jsonl/parquet/csv, split picked
from the file names, metadata files skipped) instead of through a hub loading script; plain local
files and folders are accepted; the MATH ``type`` column is kept as ``category`` (and any ``label``
/ ``category`` column a source has survives) so non-IID partitioners can use it. Every other
column is dropped.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utils.data_files import BUILDERS, data_files, local_data_root, read_files
from utils.fedllm_bench import FEDLLM_BENCH, bench_file, load_bench

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

# Columns a split or a per-client evaluation may partition by: labels, categories, natural user / group ids.
KEPT_COLUMNS = ("label", "category", "group", "user")
HISTORY = "history"  # FedLLM-Bench's multi-turn rows: the earlier turns (user, assistant, ...) before the instruction
_LOCAL_SCHEMA = ("instruction + response, or instruction + input + output (alpaca format; input "
                 "may be absent); optional label / category / group / user columns are kept")


@dataclass(frozen=True)
class SftMapping:
    """How one source schema becomes the ``instruction`` / ``response`` (+ ``category``) columns."""

    instruction: str
    response: str
    input_col: str | None = None  # alpaca: appended to the instruction after a space when non-empty
    category: str | None = None  # source column renamed to "category" (kept for non-IID splits)
    config: str | None = None  # hub config name, load_dataset's second argument
    dedup_instruction: bool = False  # keep only the first row of each distinct instruction
    configs: tuple[str, ...] = ()  # several hub configs whose rows together are the dataset (MATH's subjects)

    @property
    def required(self) -> tuple[str, ...]:
        """Source columns this mapping reads."""
        cols = (self.instruction, self.input_col, self.response, self.category)
        return tuple(c for c in cols if c is not None)


ALPACA = SftMapping("instruction", "output", input_col="input")
GSM8K = SftMapping("question", "answer", config="main")
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")

HUB_SFT_DATASETS: dict[str, SftMapping] = {
    "vicgalle/alpaca-gpt4": ALPACA,
    "tatsu-lab/alpaca": ALPACA,
    "gbharti/finance-alpaca": ALPACA,
    "yahma/alpaca-cleaned": ALPACA,
    "lucasmccabe-lmi/CodeAlpaca-20k": ALPACA,
    "FinGPT/fingpt-sentiment-train": ALPACA,
    "WizardLMTeam/WizardLM_evol_instruct_70k": SftMapping("instruction", "output"),
    "TIGER-Lab/MathInstruct": SftMapping("instruction", "output", dedup_instruction=True),
    # MATH's training problems: its seven subject configs together (there is no "all" config).
    "EleutherAI/hendrycks_math": SftMapping("problem", "solution", category="type", configs=MATH_SUBJECTS),
    "openai/gsm8k": GSM8K,
    # The flashcards' own "instruction" is one fixed sentence; OpenFedLLM uses "input" instead.
    "medalpaca/medical_meadow_medical_flashcards": SftMapping("input", "output"),
}
SFT_ALIASES: dict[str, str] = {
    "lighteval/MATH": "EleutherAI/hendrycks_math",  # OpenFedLLM's name; taken down from the Hub in 2025
    "gsm8k": "openai/gsm8k",  # OpenFedLLM's name; huggingface_hub 1.x refuses ids without a namespace
    "WizardLM/WizardLM_evol_instruct_70k": "WizardLMTeam/WizardLM_evol_instruct_70k",  # the renamed org
}
"""OpenFedLLM's dataset names whose hub copy moved: the name keeps working and loads the live copy."""
BUNDLED_SFT_DATASETS: dict[str, SftMapping] = {
    "bundled/fin_sentiment": ALPACA,  # FinGPT sentiment style, plus a "label" column
    "bundled/arithmetic": GSM8K,  # GSM8K style, plus a "category" column
}
BUNDLED_DPO_DATASETS = ("bundled/preferences", "bundled/style_preferences")  # main_dpo.py's (utils/dpo_data.py)


@dataclass(frozen=True)
class _Source:
    """Where a dataset comes from, decided once from the flags."""

    kind: str  # "hub" | "bundled" | "fedllm_bench" | "files"
    mapping: SftMapping | None  # None: plain local data, mapping chosen from its columns
    path: Path | None = None  # file or folder for kind "files"


def _supported_names() -> str:
    sft_bench = [name for name, spec in FEDLLM_BENCH.items() if spec.task == "sft"]
    return ", ".join([*HUB_SFT_DATASETS, *SFT_ALIASES, *BUNDLED_SFT_DATASETS, *sft_bench])


def hub_name(dataset_name: str) -> str:
    """The live hub id of ``dataset_name`` (an alias's target, else the name itself)."""
    return SFT_ALIASES.get(dataset_name, dataset_name)


def _check_file(path: Path) -> None:
    if path.suffix.lower() not in BUILDERS:
        raise ValueError(f"--dataset_name {path}: unsupported file type {path.suffix!r}; use one of "
                         f"{', '.join(BUILDERS)} with columns {_LOCAL_SCHEMA}.")


def _resolve(dataset_name: str, local_data_dir: str | None) -> _Source:
    """Decide where ``dataset_name`` comes from, raising a clear ValueError for bad flags."""
    if not dataset_name or not dataset_name.strip():
        raise ValueError(f"--dataset_name is empty; pass one of: {_supported_names()}, or a local file.")
    if dataset_name in BUNDLED_DPO_DATASETS:
        raise ValueError(f"--dataset_name {dataset_name} is a preference (DPO) dataset with chosen/"
                         f"rejected pairs; use it with main_dpo.py, or pick an SFT dataset: "
                         f"{', '.join(BUNDLED_SFT_DATASETS)}.")
    if dataset_name in BUNDLED_SFT_DATASETS:
        return _Source("bundled", BUNDLED_SFT_DATASETS[dataset_name])
    if dataset_name.startswith("bundled/"):
        raise ValueError(f"--dataset_name {dataset_name}: no such bundled dataset; bundled SFT datasets "
                         f"are {', '.join(BUNDLED_SFT_DATASETS)}.")
    if dataset_name in FEDLLM_BENCH:
        if FEDLLM_BENCH[dataset_name].task != "sft":
            raise ValueError(f"--dataset_name {dataset_name} is a preference (DPO) dataset; use it with main_dpo.py")
        bench_file(dataset_name, local_data_dir)
        return _Source("fedllm_bench", SftMapping("instruction", "response"))
    root = local_data_root(local_data_dir)
    mapping = HUB_SFT_DATASETS.get(hub_name(dataset_name))
    if mapping is not None:
        if root is None:
            return _Source("hub", mapping)
        # A mirror under the live id, or under an older name of it (a copy made before the move).
        older = [alias for alias, live in SFT_ALIASES.items() if live == hub_name(dataset_name)]
        folders = [root / name for name in dict.fromkeys((hub_name(dataset_name), dataset_name, *older))]
        folder = next((f for f in folders if f.is_dir()), None)
        if folder is None:
            raise ValueError(f"--local_data_dir {local_data_dir}: expected the folder {folders[0]} holding a "
                             f"copy of the hub dataset {hub_name(dataset_name)} (json/jsonl/parquet/csv files), "
                             f"e.g. `huggingface-cli download --repo-type dataset {hub_name(dataset_name)} "
                             f"--local-dir {folders[0]}`; or drop --local_data_dir to load it from the Hub.")
        data_files(folder, mapping.config)
        return _Source("files", mapping, folder)
    candidates = ([root / dataset_name] if root is not None else []) + [Path(dataset_name).expanduser()]
    for path in candidates:
        if path.is_file():
            _check_file(path)
            return _Source("files", None, path)
        if path.is_dir():
            data_files(path)
            return _Source("files", None, path)
    raise ValueError(
        f"--dataset_name {dataset_name}: not a supported dataset and no such file or folder (looked at "
        f"{', '.join(str(p) for p in candidates)}). Supported names: {_supported_names()}. Hub names are "
        "read from <--local_data_dir>/<name>/ when --local_data_dir is set; otherwise pass a local "
        f"{'/'.join(BUILDERS)} file or folder with columns {_LOCAL_SCHEMA}.")


def validate_sft_data_args(dataset_name: str, local_data_dir: str | None) -> None:
    """Check --dataset_name / --local_data_dir cheaply, before any model loads."""
    _resolve(dataset_name, local_data_dir)


def _local_mapping(columns: list[str], where: str) -> SftMapping:
    """Pick the mapping for a plain local file from the columns it has."""
    if "instruction" in columns and "response" in columns:
        return SftMapping("instruction", "response")
    if "instruction" in columns and "output" in columns:
        return SftMapping("instruction", "output", input_col="input" if "input" in columns else None)
    missing = [c for c in ("instruction", "response") if c not in columns]
    raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (has: {', '.join(columns)}). "
                     f"Expected {_LOCAL_SCHEMA}.")


def text_value(value: Any) -> str:
    """A cell as text; missing cells (None, CSV's NaN) become empty strings."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _first_occurrences(values: Any) -> list[int]:
    """Indices of the first row holding each distinct value, in order (pandas drop_duplicates)."""
    seen: set[str] = set()
    first = []
    for i, value in enumerate(values):
        if value not in seen:
            seen.add(value)
            first.append(i)
    return first


def _apply_mapping(dataset: datasets.Dataset, mapping: SftMapping, where: str, history: bool = False
                   ) -> datasets.Dataset:
    """Build instruction / response (+ label / category / group / user) columns and drop everything else;
    ``history``: keep the earlier turns of multi-turn rows (the FedLLM-Bench loader's ``history`` column)."""
    missing = [c for c in mapping.required if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (has: "
                         f"{', '.join(dataset.column_names)}). Expected columns: "
                         f"{', '.join(mapping.required)}.")
    kept = [c for c in KEPT_COLUMNS if c in dataset.column_names and c != mapping.category]

    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        instructions = [text_value(v) for v in batch[mapping.instruction]]
        if mapping.input_col is not None:
            extra = [text_value(v) for v in batch[mapping.input_col]]
            instructions = [f"{i} {x}" if x else i for i, x in zip(instructions, extra, strict=True)]
        out = {"instruction": instructions, "response": [text_value(v) for v in batch[mapping.response]]}
        out.update({c: batch[c] for c in kept})
        if mapping.category is not None:
            out["category"] = batch[mapping.category]
        if history:
            out[HISTORY] = batch[HISTORY]
        return out

    dataset = dataset.map(convert, batched=True, remove_columns=dataset.column_names,
                          desc="Mapping to instruction/response")
    if mapping.dedup_instruction:
        first = _first_occurrences(dataset["instruction"])
        logger.info("Dropped %d rows with repeated instructions", len(dataset) - len(first))
        dataset = dataset.select(first)
    order = ["instruction", "response", *[c for c in KEPT_COLUMNS if c in dataset.column_names],
             *([HISTORY] if history else [])]
    return dataset.select_columns(order)


def load_sft_dataset(dataset_name: str, local_data_dir: str | None = None,
                     dataset_sample: int | None = 20000, split: str = "train",
                     seed: int = 2023) -> datasets.Dataset:
    """Load ``dataset_name`` as instruction / response rows, shuffled and cut to ``dataset_sample``."""
    if dataset_sample is not None and dataset_sample < 0:
        raise ValueError(f"--dataset_sample {dataset_sample}: must be >= 0 (0 or None keeps every row).")
    import datasets

    source = _resolve(dataset_name, local_data_dir)
    if source.kind == "bundled":
        bundled = importlib.import_module("utils.bundled")  # lazy: generators only when asked for
        raw = bundled.load_bundled(dataset_name, split)
    elif source.kind == "fedllm_bench":
        raw = load_bench(dataset_name, local_data_dir, split)
    elif source.kind == "hub":
        mapping = source.mapping
        configs = mapping.configs or (mapping.config,)
        parts = [datasets.load_dataset(hub_name(dataset_name), config, split=split) for config in configs]
        raw = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    else:
        raw = read_files(source.path, source.mapping.config if source.mapping else None, split)
    where = str(source.path) if source.path is not None else f"--dataset_name {dataset_name}"
    mapping = source.mapping or _local_mapping(raw.column_names, where)
    dataset = _apply_mapping(raw, mapping, where, history=source.kind == "fedllm_bench" and HISTORY in raw.column_names)
    if len(dataset) == 0:
        raise ValueError(f"{where}: the {split} split has no rows.")
    dataset = dataset.shuffle(seed=seed)
    if dataset_sample:
        dataset = dataset.select(range(min(len(dataset), dataset_sample)))
    logger.info("Dataset %s (%s split) has %d examples after processing.", dataset_name, split,
                len(dataset))
    return dataset
