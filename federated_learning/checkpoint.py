"""Checkpoints of a federated run: the global adapter plus everything needed to resume exactly.

``checkpoint-<r>/`` (r = rounds completed) holds the adapter as PEFT saves it (loadable with
``PeftModel.from_pretrained``), ``merged_delta.safetensors`` for the algorithms that merge part of
the result into the base weights (``federated_learning.merged_delta``), ``federated_state.safetensors``
with every tensor of the server state (aggregator moments or control variates, the per-client loss
table, what each client keeps for itself) and ``federated_state.json`` with the plain values.
Nothing is pickled. Every random draw of a round is seeded from (seed, round, client), so no RNG
state needs saving for resume to be exact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from federated_learning.merged_delta import FILE as MERGED_FILE
from federated_learning.merged_delta import save_merged_deltas

SEP = "/"
TENSORS = "federated_state.safetensors"
VALUES = "federated_state.json"
ADAPTER = "adapter_model.safetensors"
MERGED = MERGED_FILE


def flatten(tree: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a nested dict into tensors and JSON values, keyed by their '/'-joined path."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    for key, value in tree.items():
        if SEP in str(key):
            raise ValueError(f"state key {key!r} contains {SEP!r}, which checkpoints use as separator")
        path = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().to("cpu").contiguous().clone()
        elif isinstance(value, Mapping):
            if not value:
                values[path] = {}
            sub_tensors, sub_values = flatten(value, path + SEP)
            tensors.update(sub_tensors)
            values.update(sub_values)
        else:
            values[path] = value
    return tensors, values


def unflatten(tensors: Mapping[str, torch.Tensor], values: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten``."""
    tree: dict[str, Any] = {}
    for path, value in [*tensors.items(), *values.items()]:
        node = tree
        *parents, leaf = path.split(SEP)
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and not value:
            node.setdefault(leaf, {})
        else:
            node[leaf] = value
    return tree


def _sync(folder: Path) -> None:
    """Flush ``folder``'s files and the folder itself to disk (so a power cut keeps them, not empty names)."""
    for path in [*folder.rglob("*"), folder]:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_checkpoint(run_dir: Path, rounds_done: int, model: PeftModel, server_state: Mapping[str, Any]) -> Path:
    """Write ``checkpoint-<rounds_done>/`` atomically and return its path.

    Everything is written to a hidden staging folder and synced, then renamed into place; an older
    folder of the same name is first moved aside and removed only after, so at every moment either
    the old or the new checkpoint is complete on disk.
    """
    target = run_dir / f"checkpoint-{rounds_done}"
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".checkpoint-"))
    retired = run_dir / f".retired-checkpoint-{rounds_done}"
    try:
        model.save_pretrained(staging)
        save_merged_deltas(model, staging)
        tensors, values = flatten(server_state)
        save_file(tensors, str(staging / TENSORS))
        (staging / VALUES).write_text(json.dumps({"rounds_done": rounds_done, **values}, indent=1))
        _sync(staging)
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
        os.replace(staging, target)
        _sync(run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return target


def _earlier_checkpoint(path: Path) -> str:
    """A hint naming the latest checkpoint of the same run before ``path``, if there is one."""
    def rounds(folder: Path) -> int:
        suffix = folder.name.removeprefix("checkpoint-")
        return int(suffix) if suffix.isdigit() else -1

    earlier = sorted((p for p in path.parent.glob("checkpoint-*") if p.is_dir() and -1 < rounds(p) < rounds(path)),
                     key=rounds)
    if earlier:
        return f"resume from the previous one, --resume_from_checkpoint {earlier[-1]}"
    return "this run has no earlier checkpoint: start it again without --resume_from_checkpoint"


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """Return (rounds done, global state: adapter and any merged deltas, server state) from a ``checkpoint-<r>``.

    A missing or unreadable file (a truncated copy, a broken JSON) raises one ValueError naming the
    file of the checkpoint and the earlier checkpoint to resume from instead.
    """
    path = Path(path)
    for name in (ADAPTER, TENSORS, VALUES):
        if not (path / name).is_file():
            raise ValueError(
                f"--resume_from_checkpoint {str(path)!r} lacks {name}; "
                "pass a checkpoint-<round> folder written by this framework"
            )
    try:
        values = json.loads((path / VALUES).read_text())
        rounds_done = values.pop("rounds_done")
        if isinstance(rounds_done, bool) or not isinstance(rounds_done, int):
            raise TypeError(f"rounds_done is {rounds_done!r}, not a whole number")
        adapter = load_file(str(path / ADAPTER))
        if (path / MERGED).exists():
            adapter.update(load_file(str(path / MERGED)))
        tensors = load_file(str(path / TENSORS))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, SafetensorError) as err:
        files = (VALUES, ADAPTER, TENSORS, *([MERGED] if (path / MERGED).exists() else []))
        broken = next((name for name in files if not _readable(path / name)), VALUES)
        raise ValueError(f"--resume_from_checkpoint {path}: {broken} is unreadable ({type(err).__name__}: "
                         f"{err}); {_earlier_checkpoint(path)}") from err
    return rounds_done, adapter, unflatten(tensors, values)


def _readable(file: Path) -> bool:
    """Whether ``file`` (a checkpoint's JSON or safetensors file) parses."""
    try:
        if file.suffix == ".json":
            rounds_done = json.loads(file.read_text())["rounds_done"]
            if isinstance(rounds_done, bool) or not isinstance(rounds_done, int):
                return False
        else:
            load_file(str(file))
    except (OSError, ValueError, TypeError, KeyError, SafetensorError):
        return False
    return True
