"""DPO datasets: load a hub, local or bundled preference dataset as ``prompt`` / ``chosen`` / ``rejected`` rows.

Every source becomes the same columns: ``prompt`` is the conversation before the compared answers,
a list of turns (user, assistant, ..., user; one turn for single-turn data), ``chosen`` and
``rejected`` are the two answers to its last turn, and a ``label`` / ``category`` column a source
has survives for non-IID partitioning. Rendering with a template and tokenising happen later
(``utils/dpo_tokenize.py``), once the tokenizer is loaded.

Accepted row shapes (detected per row, so local files may use any of them):

- plain text: ``prompt``, ``chosen``, ``rejected`` strings;
- hh-rlhf transcripts: ``chosen`` / ``rejected`` strings ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``
  and no ``prompt``: split at the last ``Assistant:`` marker the two transcripts share (OpenFedLLM's
  ``split_hh`` splits at the character-level common prefix instead, which cuts into both answers
  when they begin with the same words);
- conversations (ultrafeedback_binarized, TRL's conversational format): ``chosen`` / ``rejected``
  lists of ``{"role", "content"}`` messages ending with the assistant's answer; the prompt is the
  messages before it, else the ``prompt`` column (a string or a message list).

Rows that cannot be split, or whose two answers are identical or empty, are dropped (counted in the
log). Then, as OpenFedLLM: ``shuffle(seed)`` and the first ``dataset_sample`` rows.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utils.data_files import load_data_files
from utils.sft_data import (
    BUILDERS,
    HUB_SFT_DATASETS,
    KEPT_COLUMNS,
    hub_name,
    local_data_root,
    read_files,
    text_value,
)

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
BUNDLED_DPO_DATASETS = (BUNDLED_PREFERENCES,)
EXCLUDED_MIRROR_FOLDERS = ("red-team-attempts",)  # hh-rlhf: red-team transcripts, not preference pairs

_HH_MARKERS = re.compile(r"\n\n(Human|Assistant):[ ]?")
_HH_ASSISTANT = "\n\nAssistant:"
_HH_HUMAN = "\n\nHuman:"
_LOCAL_SCHEMA = ("prompt + chosen + rejected (strings, or message lists), or chosen + rejected "
                 "hh-rlhf transcripts / conversations")


def supported_names() -> str:
    """The dataset names --dataset_name accepts besides local files."""
    return ", ".join([*HUB_DPO_DATASETS, *BUNDLED_DPO_DATASETS])


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


# ---------------------------------------------------------------------------------------- row shapes
def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _merge_turns(roles_texts: Sequence[tuple[str, str]]) -> list[str] | None:
    """Turns alternating user, assistant, ..., user (consecutive same-role turns merged); None if malformed."""
    turns: list[str] = []
    last_role = None
    for role, text in roles_texts:
        if role == last_role:
            turns[-1] = f"{turns[-1]}\n\n{text}"
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            return None
        turns.append(text)
        last_role = role
    return turns if len(turns) % 2 == 1 else None


def split_transcripts(chosen: str, rejected: str) -> tuple[list[str], str, str] | None:
    """Split two hh-rlhf transcripts into the shared conversation turns and the two final answers."""
    shared = chosen[: _common_prefix_length(chosen, rejected)]
    cut = shared.rfind(_HH_ASSISTANT)
    if cut < 0:
        return None
    context = chosen[:cut] if chosen.startswith("\n\n") else "\n\n" + chosen[:cut]
    pieces = _HH_MARKERS.split(context)
    # split() with one group gives [text before the first marker, role, text, role, text, ...]
    if pieces[0].strip():
        return None
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = _merge_turns([(roles[pieces[i]], pieces[i + 1].strip()) for i in range(1, len(pieces), 2)])
    if turns is None:
        return None
    start = cut + len(_HH_ASSISTANT)
    answers = chosen[start:].strip(), rejected[start:].strip()
    if any(_HH_HUMAN in answer for answer in answers):  # the transcripts differ before their last turn
        return None
    return turns, *answers


def _message_turns(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of user/assistant messages; system messages are left to the template."""
    return [(str(m["role"]), text_value(m["content"]).strip()) for m in messages if m.get("role") != "system"]


def split_conversations(prompt: Any, chosen: Sequence[Mapping[str, Any]],
                        rejected: Sequence[Mapping[str, Any]]) -> tuple[list[str], str, str] | None:
    """Turn message lists (ultrafeedback / TRL conversational) into turns and the two final answers."""
    if not chosen or not rejected or chosen[-1].get("role") != "assistant" or rejected[-1].get("role") != "assistant":
        return None
    context = _message_turns(chosen[:-1])
    if context != _message_turns(rejected[:-1]):
        return None
    if not context:  # the answers alone: the prompt column holds the conversation
        if isinstance(prompt, str):
            context = [("user", prompt.strip())]
        elif isinstance(prompt, list):
            context = _message_turns(prompt)
    turns = _merge_turns(context)
    if turns is None:
        return None
    return turns, text_value(chosen[-1]["content"]).strip(), text_value(rejected[-1]["content"]).strip()


def to_pair(row: Mapping[str, Any]) -> tuple[list[str], str, str] | None:
    """One source row as (turns, chosen, rejected), whatever its shape; None when it cannot be used."""
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list):
        pair = split_conversations(prompt, chosen, rejected)
    elif isinstance(prompt, list):
        pair = split_conversations(prompt, [{"role": "assistant", "content": chosen}],
                                   [{"role": "assistant", "content": rejected}])
    elif not text_value(prompt).strip():  # no prompt: hh-rlhf transcripts carry it
        pair = split_transcripts(text_value(chosen), text_value(rejected))
    else:
        pair = ([text_value(prompt).strip()], text_value(chosen).strip(), text_value(rejected).strip())
    if pair is None:
        return None
    turns, good, bad = pair
    if not good or not bad or good == bad or not turns[-1]:
        return None
    return pair


def to_preference_rows(raw: datasets.Dataset, where: str) -> datasets.Dataset:
    """Map any accepted row shape to prompt (turns) / chosen / rejected (+ label / category)."""
    missing = [c for c in ("chosen", "rejected") if c not in raw.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (has: {', '.join(raw.column_names)}). "
                         f"Expected {_LOCAL_SCHEMA}.")
    kept = [c for c in KEPT_COLUMNS if c in raw.column_names]

    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": [], **{c: [] for c in kept}}
        for i in range(len(batch["chosen"])):
            pair = to_pair({name: values[i] for name, values in batch.items()})
            if pair is None:
                continue
            for name, value in zip(("prompt", "chosen", "rejected"), pair, strict=True):
                out[name].append(value)
            for c in kept:
                out[c].append(batch[c][i])
        return out

    rows = raw.map(convert, batched=True, remove_columns=raw.column_names, desc="Splitting preference pairs")
    dropped = len(raw) - len(rows)
    if dropped:
        logger.warning("%s: dropped %d of %d rows that have no usable prompt / chosen / rejected split "
                       "(identical or empty answers, or no shared conversation)", where, dropped, len(raw))
    return rows


# ---------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class _Source:
    """Where a preference dataset comes from, decided once from the flags."""

    kind: str  # "hub" | "mirror" | "bundled" | "files"
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
                             f"{', '.join(BUILDERS)} with columns {_LOCAL_SCHEMA}.")
        if path.exists():
            return _Source("files", path)
    raise ValueError(
        f"--dataset_name {dataset_name}: not a supported preference dataset and no such file or folder (looked at "
        f"{', '.join(str(p) for p in candidates)}). Supported names: {supported_names()}; or pass a local "
        f"{'/'.join(BUILDERS)} file or folder with columns {_LOCAL_SCHEMA}.")


def validate_dpo_data_args(dataset_name: str, local_data_dir: str | None, split: str | None = None) -> None:
    """Check --dataset_name / --local_data_dir / --dataset_split cheaply, before any model loads."""
    _resolve(dataset_name, local_data_dir, default_split(dataset_name, split))


def _read_raw(dataset_name: str, source: _Source, split: str) -> datasets.Dataset:
    import datasets

    if source.kind == "bundled":
        return importlib.import_module("utils.bundled").load_bundled(dataset_name, split)
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
    dataset = to_preference_rows(_read_raw(dataset_name, source, split), where)
    if len(dataset) == 0:
        raise ValueError(f"{where}: the {split} split has no usable preference pairs.")
    dataset = dataset.shuffle(seed=seed)
    if dataset_sample:
        dataset = dataset.select(range(min(len(dataset), dataset_sample)))
    logger.info("Dataset %s (%s split) has %d preference pairs after processing.", dataset_name, split, len(dataset))
    return dataset
