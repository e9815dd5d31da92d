"""Codecs that send every value, at full or half precision: ``none``, ``bf16``, ``fp16``.

``bf16`` and ``fp16`` are the half-precision casts of mixed-precision training (Micikevicius et al.,
ICLR 2018, "Mixed Precision Training"; bfloat16: Kalamkar et al., 2019, "A Study of BFLOAT16 for
Deep Learning Training"), used as a communication codec: each value is rounded to nearest even in
the half format, which halves the bytes. Relative error per value: at most 2^-8 (bf16, 8-bit
significand) or 2^-11 (fp16, 11-bit, for |x| in fp16's normal range 6.1e-5 .. 65504; smaller values
lose relative precision, larger ones become Inf: the server refuses such an update, and refuses to
send such a start state, ``federated_learning.wire``). bfloat16 travels as its
16-bit pattern (an int16 part), since the transport (numpy, under Flower's arrays) has no bfloat16.
"""

from __future__ import annotations

import torch

from federated_learning.codecs._base import Codec, Parts, PartSpecs, register_codec


@register_codec
class NoCodec(Codec):
    """Every value as it is (the default: what a run sends without compression)."""

    name = "none"
    lossless = True

    def part_specs(self, shape: tuple[int, ...], dtype: torch.dtype) -> PartSpecs:
        return {"value": (shape, dtype)}

    def encode(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> Parts:
        return {"value": tensor}

    def decode(self, parts: Parts, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return parts["value"]


@register_codec
class BFloat16(Codec):
    """Each value rounded to bfloat16, sent as its 16 bits."""

    name = "bf16"

    def part_specs(self, shape: tuple[int, ...], dtype: torch.dtype) -> PartSpecs:
        return {"bits": (shape, torch.int16)}

    def encode(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> Parts:
        return {"bits": tensor.to(torch.bfloat16).contiguous().view(torch.int16)}

    def decode(self, parts: Parts, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return parts["bits"].contiguous().view(torch.bfloat16).to(dtype)

    def check(self, parts: object, shape: tuple[int, ...], dtype: torch.dtype) -> str | None:
        reason = super().check(parts, shape, dtype)
        if reason is None and not bool(torch.isfinite(self.decode(parts, shape, torch.float32)).all()):  # type: ignore[arg-type]
            return "part bits holds the pattern of a NaN or Inf"
        return reason


@register_codec
class Float16(Codec):
    """Each value rounded to IEEE half precision."""

    name = "fp16"

    def part_specs(self, shape: tuple[int, ...], dtype: torch.dtype) -> PartSpecs:
        return {"value": (shape, torch.float16)}

    def encode(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> Parts:
        return {"value": tensor.to(torch.float16)}

    def decode(self, parts: Parts, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return parts["value"].to(dtype)
