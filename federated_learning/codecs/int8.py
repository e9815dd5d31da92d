"""``int8``: symmetric linear 8-bit quantisation with per-tensor or per-row scales, optionally stochastic.

8-bit quantisation of what workers exchange: Dettmers, ICLR 2016, "8-Bit Approximations for
Parallelism in Deep Learning"; unbiased stochastic rounding as in QSGD (Alistarh et al., NeurIPS
2017) and Gupta et al., ICML 2015, "Deep Learning with Limited Numerical Precision".

Exact rule, for a tensor x (``--int8_scale tensor``: one scale for the tensor; ``row``: one per row
of a 2-D tensor, i.e. per output feature of LoRA's B and per component of its A; a 1-D tensor has
one either way):

    s = max |x| / 127                        (over the tensor or the row; float32)
    q = clamp(round(x / s), -127, 127)       round half to even; or, with --stochastic_rounding,
    q = clamp(floor(x / s + u), -127, 127)   u ~ U[0, 1) drawn from the sender's seeded generator,
                                             so that E[q s] = x
    x_hat = q * s                            (q = 0 where s = 0)

Error per value: |x - x_hat| <= s / 2 (round to nearest), < s (stochastic). Sent: q as int8 plus
the float32 scales: 1 byte per value + 4 bytes per scale. Deliberate difference from QSGD: the scale
is the max-abs value (as in Dettmers' and most int8 schemes), not the L2 norm, with 255 levels.
"""

from __future__ import annotations

import torch

from config import INT8_SCALES
from federated_learning.codecs._base import Codec, Parts, PartSpecs, register_codec

LEVELS = 127


@register_codec
class Int8(Codec):
    """Symmetric int8 quantisation (see the module docstring for the exact rule)."""

    name = "int8"

    def __init__(self, *, int8_scale: str = "tensor", stochastic_rounding: bool = False) -> None:
        """``int8_scale``: "tensor" or "row"; ``stochastic_rounding``: unbiased rounding instead of nearest."""
        if int8_scale not in INT8_SCALES:
            raise ValueError(f"--int8_scale {int8_scale!r} is unknown; use one of: {', '.join(INT8_SCALES)}")
        self.per_row = int8_scale == "row"
        self.stochastic = stochastic_rounding

    def describe(self) -> str:
        return f"int8 ({'row' if self.per_row else 'tensor'} scales{', stochastic' if self.stochastic else ''})"

    def _scale_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0],) if self.per_row and len(shape) == 2 else (1,)

    def part_specs(self, shape: tuple[int, ...], dtype: torch.dtype) -> PartSpecs:
        return {"q": (shape, torch.int8), "scale": (self._scale_shape(shape), torch.float32)}

    @torch.no_grad()
    def encode(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> Parts:
        x = tensor.detach().float()
        rows = self.per_row and x.dim() == 2
        peak = x.abs().amax(dim=1) if rows else x.abs().amax().reshape(1)
        scale = peak / LEVELS
        divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
        scaled = x / (divisor[:, None] if rows else divisor)
        if self.stochastic:
            scaled = torch.floor(scaled + torch.rand(scaled.shape, generator=generator))
        else:
            scaled = torch.round(scaled)
        return {"q": scaled.clamp_(-LEVELS, LEVELS).to(torch.int8), "scale": scale}

    def decode(self, parts: Parts, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        q, scale = parts["q"].float(), parts["scale"]
        rows = self.per_row and len(shape) == 2
        return (q * (scale[:, None] if rows else scale)).to(dtype)

    def check(self, parts: object, shape: tuple[int, ...], dtype: torch.dtype) -> str | None:
        reason = super().check(parts, shape, dtype)
        if reason is None and bool((parts["scale"] < 0).any()):  # type: ignore[index]
            return "part scale is negative"
        if reason is None and bool((parts["q"] < -LEVELS).any()):  # type: ignore[index]
            return f"part q holds -128, outside the codec's levels -{LEVELS}..{LEVELS}"
        return reason
