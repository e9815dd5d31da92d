"""Weight changes merged out of the LoRA adapter, kept in float32 beside each frozen base layer.

FLoRA, FlexLoRA and FedEx-LoRA (``federated_learning/aggregators/``) move part of the federation's
result out of the adapter and into the base weights: W = W0 + s·(M + B·A), s = α/r the adapter's
LoRA scaling, M in the units of the product B·A (so no aggregator needs s). Folding s·M into W0
itself is not possible with a 4/8-bit base and loses it in a bf16-stored one (a change of 1e-4 of a
weight is below bf16's resolution), so each LoRA layer of the ``default`` adapter gets a float32
buffer M (out_features x in_features), added to the layer's output as s·x·Mᵀ by a forward hook
whenever that adapter is the active one: not under ``disable_adapter()`` nor with the DPO ``ref`` adapter
active, so a reference policy stays the base (or ``--ref_adapter``) model. Cost: one dense matmul
per adapted layer and 4 bytes per base weight of those layers (SmolLM2-135M, q,v: 53 MB;
Llama-2-7B, q,v: 4.3 GB); under bf16 autocast each forward also casts M to bf16 (a transient copy of
2 bytes per weight, kept for the backward pass while the layer's activations are).

The buffers travel with the adapter under keys named like its own (``<layer>.merged_delta``
beside ``<layer>.lora_A.weight``), and a checkpoint stores them in ``merged_delta.safetensors``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from federated_learning.types import StateDict

SUFFIX = "merged_delta"
FILE = "merged_delta.safetensors"
ADAPTER = "default"
_BUFFER = "fed_merged_delta"


def is_merged_key(key: str) -> bool:
    """Whether ``key`` names a merged-delta buffer (not an adapter weight)."""
    return key.endswith("." + SUFFIX)


def merged_key(lora_key: str) -> str:
    """The merged-delta key of the layer that ``lora_key`` (its ``lora_A``/``lora_B`` weight) belongs to."""
    for part in (".lora_A.weight", ".lora_B.weight"):
        if lora_key.endswith(part):
            return lora_key[: -len(part)] + "." + SUFFIX
    raise ValueError(f"{lora_key} is not a LoRA A or B weight")


def _lora_layers(model: torch.nn.Module) -> Iterator[tuple[str, Any]]:
    """(name, layer) of every PEFT LoRA layer holding the default adapter (peft imported only here)."""
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            yield name, module


def _add_delta(module: Any, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    if module.disable_adapters or ADAPTER not in module.active_adapters:
        return output
    x = args[0]
    delta = getattr(module, _BUFFER)
    # under autocast the matmul runs in the autocast dtype, as W0's does
    return output + module.scaling[ADAPTER] * torch.nn.functional.linear(x, delta.to(x.dtype))


def attach_merged_deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Give every LoRA layer of the default adapter a zero float32 M; return {key: buffer}.

    Idempotent: a model that has them keeps them (and their values).
    """
    buffers = merged_deltas(model)
    if buffers:
        return buffers
    for name, module in _lora_layers(model):
        base = module.get_base_layer()
        if not isinstance(base, torch.nn.Linear):  # bitsandbytes' 8/4-bit layers are Linear subclasses
            raise ValueError(f"{name}: merging into the base needs a linear layer (torch.nn.Linear or a bitsandbytes "
                             f"one), not {type(base).__name__}; choose --peft_target_modules of linear layers")
        weight = base.weight
        module.register_buffer(_BUFFER, torch.zeros(module.out_features, module.in_features, device=weight.device),
                               persistent=False)
        module.register_forward_hook(_add_delta)
    buffers = merged_deltas(model)
    if not buffers:
        raise ValueError("the model has no LoRA layer to merge into")
    return buffers


def merged_deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{key: live buffer} of the model's merged deltas (empty when it has none)."""
    return {f"{name}.{SUFFIX}": getattr(module, _BUFFER) for name, module in _lora_layers(model)
            if hasattr(module, _BUFFER)}


def save_merged_deltas(model: torch.nn.Module, folder: Path) -> None:
    """Write the model's merged deltas to ``folder/merged_delta.safetensors`` (nothing when it has none)."""
    from safetensors.torch import save_file

    buffers = merged_deltas(model)
    if buffers:
        save_file({key: t.detach().to("cpu").contiguous() for key, t in buffers.items()}, str(folder / FILE))


def load_merged_deltas(model: torch.nn.Module, folder: str | Path) -> bool:
    """Attach and fill the merged deltas saved in ``folder`` (a checkpoint); False when it holds none."""
    from safetensors.torch import load_file

    path = Path(folder) / FILE
    if not path.is_file():
        return False
    saved = load_file(str(path))
    buffers = attach_merged_deltas(model)
    if saved.keys() != buffers.keys():
        raise ValueError(f"{path} was written for other LoRA layers ({len(saved)} vs {len(buffers)} of this model)")
    with torch.no_grad():
        for key, buffer in buffers.items():
            if saved[key].shape != buffer.shape:
                raise ValueError(f"{path}: {key} has shape {tuple(saved[key].shape)}, the layer "
                                 f"{tuple(buffer.shape)}")
            buffer.copy_(saved[key])
    return True


@torch.no_grad()
def fold_into_base(model: torch.nn.Module) -> None:
    """Add each merged delta into its (unquantised) base weight and drop it: the model then computes the same
    without the hook (for ``merge_and_unload`` and saving a plain transformers model)."""
    for _, module in _lora_layers(model):
        if hasattr(module, _BUFFER):
            weight = module.get_base_layer().weight
            delta = module.scaling[ADAPTER] * getattr(module, _BUFFER)
            weight.copy_((weight.float() + delta).to(weight.dtype))
            getattr(module, _BUFFER).zero_()


def split_state(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict]:
    """(adapter weights, merged deltas) of a global state."""
    adapter = {k: v for k, v in state.items() if not is_merged_key(k)}
    return adapter, {k: v for k, v in state.items() if is_merged_key(k)}
