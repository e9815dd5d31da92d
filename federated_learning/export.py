"""``python -m federated_learning.export``: a checkpoint as a model that PEFT or transformers loads on its own.

Most checkpoints already are one: ``checkpoint-<r>/`` is a PEFT adapter folder. Two kinds are not:

- FedSA-LoRA's (a checkpoint whose server state holds the clients' own B): the adapter file has
  the shared A with the initial B. ``--personal mean`` writes the global model (the examples-weighted
  mean of the clients' B, what the round evaluation scored), ``--personal <client id>`` that
  client's own; either is a PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
  Ditto's checkpoints hold each client's whole personal adapter: ``--personal <client id>`` writes
  it (the adapter file is already the global model).
- FLoRA's, FlexLoRA's and FedEx-LoRA's (a ``merged_delta.safetensors`` beside the adapter): the model is
  W0 + s·(M + B·A). This writes the whole model with both folded into the base weights, as
  transformers saves it (safetensors), with its tokenizer: ``from_pretrained(<output>)``. The base is
  loaded from the run's config.json (``--model_name_or_path`` overrides it) in float32; a 4/8-bit
  base cannot be folded into, so such a run is exported from an unquantised copy of its base.

Bad input gets one line naming the flag and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from federated_learning.merged_delta import FILE as MERGED_FILE
from federated_learning.merged_delta import split_state
from federated_learning.types import StateDict


@dataclass
class ExportArguments:
    """The flags of ``python -m federated_learning.export``."""

    checkpoint: str = field(metadata={"help": "a run's checkpoint-<r> folder"})
    output: str = field(metadata={"help": "folder to write (created; must not exist or be empty)"})
    personal: str | None = field(default=None, metadata={
        "help": "FedSA-LoRA checkpoints: 'mean' (the global model) or a client id (its own B)"})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "the base model to fold into (default: the run's, from its config.json)"})


def _personal(checkpoint: Path) -> tuple[dict[str, StateDict], dict[str, int]]:
    """(each client's kept state, its example count) from a checkpoint's server state (empty: none kept)."""
    from federated_learning.checkpoint import load_checkpoint

    personal = load_checkpoint(checkpoint)[2].get("personal", {})
    return personal.get("states", {}), personal.get("sizes", {})


def export_personal(checkpoint: Path, output: Path, which: str) -> Path:
    """Write the PEFT adapter of client ``which`` (or ``mean``) of a FedSA-LoRA or Ditto checkpoint to ``output``."""
    from safetensors.torch import save_file

    from federated_learning.checkpoint import load_checkpoint
    from federated_learning.state import weighted_average

    states, sizes = _personal(checkpoint)
    if not states:
        raise ValueError(f"--personal: {checkpoint} holds no client's own weights (not a FedSA-LoRA or Ditto run "
                         "of the simulation: on Flower each SuperNode keeps its client's own); its folder is the "
                         "PEFT adapter the server has")
    if which == "mean" and load_checkpoint(checkpoint)[2].get("fed_alg") == "ditto":
        raise ValueError(f"--personal mean: {checkpoint} is a Ditto run, whose adapter file already is the global "
                         "model (the mean of the clients' personal adapters is no model of the run); export it as it "
                         "is, or pass a client id")
    if which == "mean":
        clients = sorted(states, key=int)
        kept = weighted_average([states[c] for c in clients], [sizes[c] for c in clients])
    elif which in states:
        kept = states[which]
    else:
        raise ValueError(f"--personal {which}: use 'mean' or one of the clients that trained: "
                         f"{', '.join(sorted(states, key=int))}")
    adapter, _ = split_state(load_checkpoint(checkpoint)[1])
    output.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint / "adapter_config.json", output / "adapter_config.json")
    save_file({**adapter, **kept}, str(output / "adapter_model.safetensors"))
    return output


def export_merged(checkpoint: Path, output: Path, model_name_or_path: str | None) -> Path:
    """Write the full model of a checkpoint with merged deltas, adapter and deltas folded into the base."""
    from config import ScriptArguments
    from federated_learning.build import load_peft_model
    from federated_learning.merged_delta import fold_into_base, load_merged_deltas

    config_file = checkpoint.parent / "config.json"
    if not config_file.is_file():
        raise ValueError(f"--checkpoint {checkpoint}: no config.json in its run folder; pass the checkpoint inside "
                         "the run folder that wrote it")
    saved = json.loads(config_file.read_text())
    names = {f.name for f in dataclasses.fields(ScriptArguments)}
    script = ScriptArguments(**{k: v for k, v in saved.items() if k in names})
    script = dataclasses.replace(script, load_in_8bit=False, load_in_4bit=False, torch_dtype="float32",
                                 gradient_checkpointing=False,
                                 model_name_or_path=model_name_or_path or script.model_name_or_path)
    model, tokenizer = load_peft_model(script, str(checkpoint))
    load_merged_deltas(model, checkpoint)
    fold_into_base(model)
    merged = model.merge_and_unload()
    merged.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    return output


def export(args: ExportArguments) -> Path:
    """Export ``args.checkpoint`` to ``args.output``; return the folder written."""
    checkpoint, output = Path(args.checkpoint), Path(args.output)
    if not (checkpoint / "adapter_config.json").is_file():
        raise ValueError(f"--checkpoint {checkpoint}: no adapter_config.json there; pass a run's checkpoint-<r>")
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"--output {output} exists and is not empty; choose a new folder")
    if args.personal is not None:
        return export_personal(checkpoint, output, args.personal)
    if (checkpoint / MERGED_FILE).is_file():
        return export_merged(checkpoint, output, args.model_name_or_path)
    if _personal(checkpoint)[0]:
        raise ValueError(f"--checkpoint {checkpoint}: its B factors are the clients' own (FedSA-LoRA); pass "
                         "--personal mean for the global model or --personal <client id>")
    raise ValueError(f"--checkpoint {checkpoint} is a PEFT adapter folder as it is: load it with "
                     "PeftModel.from_pretrained; nothing to export")


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: parse, export, print the folder; bad input exits with one line."""
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(ExportArguments).parse_args_into_dataclasses(argv)
    try:
        folder = export(args)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(folder)
    return folder


if __name__ == "__main__":
    main()
