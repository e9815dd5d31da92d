"""DPO datasets: load a hub, local or bundled preference dataset as ``prompt`` / ``chosen`` / ``rejected`` rows.

Every source becomes the same columns: ``prompt`` is the conversation before the compared answers,
a list of turns (user, assistant, ..., user; one turn for single-turn data), ``chosen`` and
``rejected`` are the two answers to its last turn, and a ``label`` / ``category`` column a source
has survives for non-IID partitioning. Rendering with a template and tokenising happen later
(``utils/dpo_tokenize.py``), once the tokenizer is loaded.

Row shapes (plain strings, hh-rlhf transcripts, conversations) are detected per row
(``utils.preference_rows``). Rows that cannot be split, or whose two answers are identical or
empty, are dropped (counted in the log). Then, as OpenFedLLM: ``shuffle(seed)`` and the first
``dataset_sample`` rows.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from utils.data_files import BUILDERS, load_data_files, local_data_root, read_files
from utils.fedllm_bench import FEDLLM_BENCH, bench_file, load_bench
from utils.preference_rows import LOCAL_SCHEMA, to_preference_rows
from utils.sft_data import BUNDLED_DPO_DATASETS, HUB_SFT_DATASETS, hub_name

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

HH_RLHF = "Anthropic/hh-rlhf"
ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"
BUNDLED_PREFERENCES = "bundled/preferences"


@dataclass(frozen=True)
class HubPreferenceDataset:
    """A supported hub preference dataset: its splits and how its repository lays out files."""

    train_split: str  # what --dataset_split defaults to
    splits: tuple[str, ...]  # every split it has
    suffixes: tuple[str, ...]  # data-file endings in its repository


HUB_DPO_DATASETS: dict[str, HubPreferenceDataset] = {
    # <subset>/{train,test}.jsonl.gz; red-team-attempts/ has no test file and another schema.
    HH_RLHF: HubPreferenceDataset("train", ("train", "test"), (".jsonl.gz", ".jsonl", ".json", ".parquet")),
    # data/<split>-00000-of-00001.parquet. OpenFedLLM reads train_sft; train_prefs is the preference split.
    ULTRAFEEDBACK: HubPreferenceDataset(
        "train_sft", ("train_prefs", "test_prefs", "train_sft", "test_sft", "train_gen", "test_gen"), (".parquet",)
    ),
}
EXCLUDED_MIRROR_FOLDERS = ("red-team-attempts",)  # hh-rlhf: red-team transcripts, not preference pairs



def supported_names() -> str:
    """The dataset names --dataset_name accepts besides local files."""
    dpo_bench = [name for name, spec in FEDLLM_BENCH.items() if spec.task == "dpo"]
    return ", ".join([*HUB_DPO_DATASETS, *BUNDLED_DPO_DATASETS, *dpo_bench])


def default_split(dataset_name: str, split: str | None = None) -> str:
    """The training split: ``split`` when given, else the dataset's usual one (train_sft for ultrafeedback)."""
    if split:
        return split
    hub = HUB_DPO_DATASETS.get(dataset_name)
    return hub.train_split if hub is not None else "train"


def heldout_split(train_split: str) -> str:
    """The held-out split paired with a training split: train -> test, train_prefs -> test_prefs."""
    if train_split == "train":
        return "test"
    if train_split.startswith("train_"):
        return "test_" + train_split[len("train_"):]
    return "test"


# ---------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class _Source:
    """Where a preference dataset comes from, decided once from the flags."""

    kind: str  # "hub" | "mirror" | "bundled" | "fedllm_bench" | "files"
    path: Path | None = None


def _mirror_files(folder: Path, split: str, suffixes: Sequence[str]) -> list[Path]:
    """Files of ``split`` in a hub mirror: named ``<split>.<ext>`` or ``<split>-<shard>.<ext>``."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(p.startswith(".") or p in EXCLUDED_MIRROR_FOLDERS for p in relative.parts):
            continue
        name = path.name.lower()
        suffix = next((s for s in suffixes if name.endswith(s)), None)
        if suffix is not None and re.split(r"[-.]", name[: -len(suffix)])[0] == split:
            found.append(path)
    return found


def _check_split(dataset_name: str, split: str) -> None:
    hub = HUB_DPO_DATASETS.get(dataset_name)
    valid = hub.splits if hub is not None else ("train", "test") if dataset_name in BUNDLED_DPO_DATASETS else None
    if valid is not None and split not in valid:
        raise ValueError(f"--dataset_split {split!r}: {dataset_name} has splits {', '.join(valid)}")


def _resolve(dataset_name: str, local_data_dir: str | None, split: str) -> _Source:
    """Decide where ``dataset_name`` comes from, raising a ValueError that names the flag and the fix."""
    if not dataset_name or not dataset_name.strip():
        raise ValueError(f"--dataset_name is empty; pass one of: {supported_names()}, or a local file.")
    if hub_name(dataset_name) in HUB_SFT_DATASETS or (dataset_name.startswith("bundled/")
                                            and dataset_name not in BUNDLED_DPO_DATASETS):
        raise ValueError(f"--dataset_name {dataset_name} is not a preference dataset (no chosen/rejected pairs); "
                         f"use it with main_sft.py, or pick one of: {supported_names()}.")
    _check_split(dataset_name, split)
    if dataset_name in BUNDLED_DPO_DATASETS:
        return _Source("bundled")
    if dataset_name in FEDLLM_BENCH:
        if FEDLLM_BENCH[dataset_name].task != "dpo":
            raise ValueError(f"--dataset_name {dataset_name} is an SFT dataset (no chosen/rejected pairs); use it with "
                             "main_sft.py")
        bench_file(dataset_name, local_data_dir)
        return _Source("fedllm_bench")
    root = local_data_root(local_data_dir)
    hub = HUB_DPO_DATASETS.get(dataset_name)
    if hub is not None:
        if root is None:
            return _Source("hub")
        folder = root / dataset_name
        if not (folder.is_dir() and _mirror_files(folder, split, hub.suffixes)):
            raise ValueError(f"--local_data_dir {local_data_dir}: expected {folder} to hold the {split} files of "
                             f"{dataset_name} ({' or '.join(hub.suffixes)}, named {split}* as in the hub repository), "
                             f"e.g. `huggingface-cli download --repo-type dataset {dataset_name} "
                             f"--local-dir {folder}`; or drop --local_data_dir to load it from the Hub.")
        return _Source("mirror", folder)
    candidates = ([root / dataset_name] if root is not None else []) + [Path(dataset_name).expanduser()]
    for path in candidates:
        if path.is_file() and path.suffix.lower() not in BUILDERS:
            raise ValueError(f"--dataset_name {path}: unsupported file type {path.suffix!r}; use one of "
                             f"{', '.join(BUILDERS)} with columns {LOCAL_SCHEMA}.")
        if path.exists():
            return _Source("files", path)
    raise ValueError(
        f"--dataset_name {dataset_name}: not a supported preference dataset and no such file or folder (looked at "
        f"{', '.join(str(p) for p in candidates)}). Supported names: {supported_names()}; or pass a local "
        f"{'/'.join(BUILDERS)} file or folder with columns {LOCAL_SCHEMA}.")


def validate_dpo_data_args(dataset_name: str, local_data_dir: str | None, split: str | None = None) -> None:
    """Check --dataset_name / --local_data_dir / --dataset_split cheaply, before any model loads."""
    _resolve(dataset_name, local_data_dir, default_split(dataset_name, split))


def _read_raw(dataset_name: str, source: _Source, split: str, local_data_dir: str | None) -> datasets.Dataset:
    import datasets

    if source.kind == "bundled":
        return importlib.import_module("utils.bundled").load_bundled(dataset_name, split)
    if source.kind == "fedllm_bench":
        return load_bench(dataset_name, local_data_dir, split)
    if source.kind == "hub":
        return datasets.load_dataset(dataset_name, split=split)
    assert source.path is not None
    if source.kind == "mirror":
        files = _mirror_files(source.path, split, HUB_DPO_DATASETS[dataset_name].suffixes)
        builder = "parquet" if files[0].name.endswith(".parquet") else "json"
        logger.info("Reading %d %s file(s) for split %s from %s", len(files), builder, split, source.path)
        return load_data_files(builder, [str(f) for f in files])
    return read_files(source.path, None, split)


def load_dpo_dataset(dataset_name: str, local_data_dir: str | None = None, dataset_sample: int | None = 20000,
                     split: str | None = None, seed: int = 2023) -> datasets.Dataset:
    """Load ``dataset_name`` as prompt (turns) / chosen / rejected rows, shuffled and cut to ``dataset_sample``."""
    if dataset_sample is not None and dataset_sample < 0:
        raise ValueError(f"--dataset_sample {dataset_sample}: must be >= 0 (0 or None keeps every row).")
    split = default_split(dataset_name, split)
    source = _resolve(dataset_name, local_data_dir, split)
    where = str(source.path) if source.path is not None else f"--dataset_name {dataset_name}"
    dataset = to_preference_rows(_read_raw(dataset_name, source, split, local_data_dir), where)
    if len(dataset) == 0:
        raise ValueError(f"{where}: the {split} split has no usable preference pairs.")
    dataset = dataset.shuffle(seed=seed)
    if dataset_sample:
        dataset = dataset.select(range(min(len(dataset), dataset_sample)))
    logger.info("Dataset %s (%s split) has %d preference pairs after processing.", dataset_name, split, len(dataset))
    return dataset
