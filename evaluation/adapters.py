"""The adapters ``python -m evaluation`` scores: checks, labels, their training template and DPO reference."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("evaluation")


def adapter_labels(adapters: list[str]) -> list[str]:
    """Short unique column names: the folder name, or parent/folder when folder names repeat."""
    names = [Path(a).name for a in adapters]
    if len(set(names)) < len(names):
        names = [f"{Path(a).parent.name}/{Path(a).name}" for a in adapters]
    if len(set(names)) < len(names):
        names = [f"{n} ({i})" for i, n in enumerate(names)]
    return names


def infer_template(adapters: list[str]) -> str:
    """The template the adapters were trained with (their run folder's config.json), else alpaca."""
    found = set()
    for adapter in adapters:
        config = Path(adapter).parent / "config.json"
        if config.is_file():
            template = json.loads(config.read_text()).get("template")
            if template:
                found.add(template)
    if len(found) > 1:
        raise ValueError(f"the adapters were trained with different templates ({', '.join(sorted(found))}); "
                         "pass --template")
    return found.pop() if found else "alpaca"


def _keeps_personal_state(fed_alg: str) -> bool:
    """Whether the clients of ``fed_alg`` (as a checkpoint names it) keep part of the adapter (FedSA-LoRA's B)."""
    from federated_learning.aggregators._registry import aggregator_class

    try:
        return aggregator_class(fed_alg).client_class.keeps_personal_state()
    except ValueError:  # an algorithm this installation does not have
        return False


def check_adapter(adapter: str) -> None:
    """Raise a ValueError naming ``--adapter`` unless ``adapter`` is a PEFT adapter folder scorable as it is."""
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ValueError(f"--adapter {adapter}: no adapter_config.json there; pass a PEFT adapter folder "
                         "such as <output_dir>/<run>/checkpoint-<round>")
    export = f"python -m federated_learning.export --checkpoint {adapter} --output <folder>"
    if (Path(adapter) / "merged_delta.safetensors").is_file():
        raise ValueError(f"--adapter {adapter}: this checkpoint also changes the base weights "
                         f"(merged_delta.safetensors: FLoRA, FlexLoRA, FedEx-LoRA); run {export} and pass "
                         "--model_name_or_path <folder> without --adapter")
    state = Path(adapter) / "federated_state.json"
    values = json.loads(state.read_text()) if state.is_file() else {}
    fed_alg = values.get("fed_alg")
    kept = any(str(key).startswith("personal/") for key in values)
    if kept or (isinstance(fed_alg, str) and _keeps_personal_state(fed_alg)):
        if not kept:
            raise ValueError(f"--adapter {adapter}: part of its adapter is the clients' own (--fed_alg {fed_alg}), "
                             "and this checkpoint holds none (a Flower run's SuperNodes keep them): its adapter "
                             "file is the shared part with the initial rest (with LoRA's zero B: the base model)")
        raise ValueError(f"--adapter {adapter}: part of its adapter is the clients' own (--fed_alg {fed_alg}); "
                         f"run {export} --personal mean (the global model) or --personal <client id>, and "
                         "pass --adapter <folder>")


def use_saved_reference(model: Any, adapter: Path) -> None:
    """Make the DPO reference of ``model`` the one its checkpoint saved (``<adapter>/ref/``), else the base model.

    A DPO run with ``--ref_adapter`` saves its reference next to every checkpoint; preference metrics
    of that checkpoint are meaningful only against it.
    """
    from utils.constants import REF_ADAPTER
    from utils.model import attach_reference_adapter

    saved = adapter / REF_ADAPTER
    if (saved / "adapter_config.json").is_file():
        attach_reference_adapter(model, saved)
        logger.info("%s: DPO reference from %s", adapter, saved)
    elif REF_ADAPTER in model.peft_config:
        model.delete_adapter(REF_ADAPTER)
