"""LoRA factors in a state dict: which keys are A and B, clients of lower rank, the product B·A.

A client of rank r_k < r (``--client_lora_ranks``; r = ``--peft_lora_r``, the global adapter's)
trains the first r_k components of the global adapter: rows 0..r_k-1 of every A (r x in) and
columns 0..r_k-1 of every B (out x r). It receives those components (``slice_rank``) and loads them
into its full-rank model with the other components set to zero (``federated_learning.state.load_start``,
``pad_rank``), which keeps them exactly zero through training: their gradients are
products with the zero components (∂L/∂A_j ∝ B_jᵀ, ∂L/∂B_j ∝ A_j x), and AdamW, weight decay and
clipping leave a zero that gets zero gradients at zero. It sends only its r_k components
(``slice_rank``); the server pads them back (``pad_rank``). Every client's LoRA is scaled by the
global adapter's α/r, so a product B_k·A_k means the same weight change whatever the rank
(FLoRA's convention; FlexLoRA's code scales each client by α/r_k instead).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from federated_learning.types import StateDict

A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"


def is_a(key: str) -> bool:
    """Whether ``key`` is a LoRA A weight (r x in_features)."""
    return key.endswith(A_SUFFIX)


def is_b(key: str) -> bool:
    """Whether ``key`` is a LoRA B weight (out_features x r)."""
    return key.endswith(B_SUFFIX)


def factor_pairs(keys: Mapping[str, object] | list[str]) -> dict[str, tuple[str, str]]:
    """{layer: (A key, B key)} for every layer whose A and B are both among ``keys``."""
    names = set(keys)
    pairs = {}
    for key in sorted(names):
        if is_a(key):
            layer = key[: -len(A_SUFFIX)]
            if layer + B_SUFFIX in names:
                pairs[layer] = (key, layer + B_SUFFIX)
    return pairs


def slice_rank(state: Mapping[str, torch.Tensor], rank: int) -> StateDict:
    """The first ``rank`` components of every LoRA factor of ``state`` (other entries as they are)."""
    out = {}
    for key, tensor in state.items():
        if is_a(key) and tensor.shape[0] > rank:
            out[key] = tensor[:rank].clone()
        elif is_b(key) and tensor.shape[1] > rank:
            out[key] = tensor[:, :rank].clone()
        else:
            out[key] = tensor
    return out


@torch.no_grad()
def pad_rank(like: torch.Tensor, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (a factor of lower rank) zero-padded to the shape of ``like``; itself when the shapes agree."""
    if tensor.shape == like.shape:
        return tensor
    out = torch.zeros_like(like, dtype=tensor.dtype)
    if is_a(key):
        out[: tensor.shape[0]] = tensor
    elif is_b(key):
        out[:, : tensor.shape[1]] = tensor
    else:
        raise ValueError(f"{key} has shape {tuple(tensor.shape)}, not the global {tuple(like.shape)}")
    return out


@torch.no_grad()
def product(state: Mapping[str, torch.Tensor], a_key: str, b_key: str) -> torch.Tensor:
    """B·A of one layer, in float32."""
    return state[b_key].float() @ state[a_key].float()
