"""``topk``: top-k sparsification of an update, with error feedback (upload only).

Stich, Cordonnier and Jaggi, NeurIPS 2018, "Sparsified SGD with Memory"; Karimireddy et al., ICML
2019, "Error Feedback Fixes SignSGD and other Gradient Compression Schemes".

Exact rule, per adapter tensor of n values, for client i in round t (``--topk_fraction`` f):

    k   = max(1, ceil(f n))
    p   = Δ_i^t + e_i^t              the round's update plus the client's residual (e_i^0 = 0)
    S   = the k indices of largest |p| (torch.topk; ties as it breaks them)
    sent: the indices S (int32) and the values p[S] (float32): 8 bytes per kept value
    e_i^{t+1} = p - p[S] on S        what was not sent, kept by the client for its next round

so that, over the rounds, what a client has sent plus its residual equals the sum of its true
updates. The residual lives with the client (``federated_learning.wire``): checkpointed with the
server state in the simulation, in the SuperNode's state on Flower. Deliberate difference from
Stich et al.: k is taken per tensor (each LoRA factor keeps its share), not over the whole adapter
as one vector. A full state (the download) is not an update and has no residual to feed back, so
this codec is refused for ``--download_codec``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from federated_learning.codecs._base import Codec, Parts, PartSpecs, register_codec


@register_codec
class TopK(Codec):
    """The k largest-magnitude values of each tensor, with their flat indices (see the module docstring)."""

    name = "topk"
    error_feedback = True
    for_download = False

    def __init__(self, *, topk_fraction: float = 0.01) -> None:
        """``topk_fraction``: the share of each tensor's values sent, in (0, 1]."""
        if not 0 < topk_fraction <= 1:
            raise ValueError(f"--topk_fraction must be in (0, 1], got {topk_fraction}")
        self.fraction = topk_fraction

    def describe(self) -> str:
        return f"topk (fraction {self.fraction!r})"

    def k(self, numel: int) -> int:
        """How many values of a tensor of ``numel`` values are sent."""
        # exact in decimal: 0.07 x 100 is 7.000000000000001 in floats, whose ceiling would be 8
        return min(numel, max(1, math.ceil(Fraction(repr(self.fraction)) * numel)))

    def part_specs(self, shape: tuple[int, ...], dtype: torch.dtype) -> PartSpecs:
        k = self.k(math.prod(shape))
        return {"indices": ((k,), torch.int32), "values": ((k,), torch.float32)}

    @torch.no_grad()
    def encode(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> Parts:
        flat = tensor.detach().float().reshape(-1)
        indices = torch.topk(flat.abs(), self.k(flat.numel()), sorted=False).indices
        return {"indices": indices.to(torch.int32), "values": flat[indices]}

    def decode(self, parts: Parts, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        flat = torch.zeros(math.prod(shape), dtype=torch.float32)
        flat[parts["indices"].long()] = parts["values"]
        return flat.reshape(shape).to(dtype)

    def check(self, parts: object, shape: tuple[int, ...], dtype: torch.dtype) -> str | None:
        reason = super().check(parts, shape, dtype)
        if reason is not None:
            return reason
        indices = parts["indices"].long()  # type: ignore[index]
        if bool(((indices < 0) | (indices >= math.prod(shape))).any()):
            return f"part indices points outside the tensor's {math.prod(shape)} values"
        if indices.unique().numel() != indices.numel():
            return "part indices repeats an index"
        return None
