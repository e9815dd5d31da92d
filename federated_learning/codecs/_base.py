"""The codec interface: how one tensor travels (``--upload_codec``, ``--download_codec``), and the registry.

A codec turns a float tensor into *parts*, the named tensors that travel (int8 values and their
scales, top-k indices and values, ...), and back. What a run reports as bytes sent is the size of
those parts (``parts_bytes``): on Flower each part is one array of the message. The receiving side
never trusts parts: ``check`` compares them with what the codec would produce for a tensor of the
expected shape (``part_specs``: names, shapes, dtypes; finite values) before ``decode`` reads them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

Parts = dict[str, torch.Tensor]
"""What travels for one tensor: part name -> tensor."""

PartSpecs = dict[str, tuple[tuple[int, ...], torch.dtype]]
"""Part name -> (shape, dtype) that a codec's parts of one tensor must have."""


class Codec(ABC):
    """Encodes one float tensor into ``Parts`` and decodes them; subclasses register with ``@register_codec``."""

    name: ClassVar[str]
    lossless: ClassVar[bool] = False  # decode(encode(x)) == x bit for bit
    error_feedback: ClassVar[bool] = False  # the sender keeps what it did not send and adds it next time
    for_download: ClassVar[bool] = True  # may encode a whole state (not only an update) on the way down

    @abstractmethod
    def part_specs(self, shape: tuple[int, ...], dtype: torch.dtype) -> PartSpecs:
        """The parts this codec sends for a tensor of ``shape`` and ``dtype``."""

    @abstractmethod
    def encode(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> Parts:
        """The parts of ``tensor`` (``generator``: the draws of stochastic rounding, when the codec has any)."""

    @abstractmethod
    def decode(self, parts: Parts, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The tensor ``parts`` stand for (``parts`` have passed ``check``)."""

    def check(self, parts: object, shape: tuple[int, ...], dtype: torch.dtype) -> str | None:
        """Why ``parts`` cannot be the encoding of a tensor of ``shape`` and ``dtype`` (None: they can)."""
        if not isinstance(parts, dict):
            return "is not a mapping of parts"
        specs = self.part_specs(shape, dtype)
        if set(parts) != set(specs):
            return f"has parts {sorted(map(str, parts))}, the {self.name} codec sends {sorted(specs)}"
        for part, (part_shape, part_dtype) in specs.items():
            tensor = parts[part]
            if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or tensor.device.type == "meta":
                return f"part {part} is not a dense tensor"
            if tuple(tensor.shape) != part_shape or tensor.dtype != part_dtype:
                return (f"part {part} is {tensor.dtype} {tuple(tensor.shape)}, the {self.name} codec sends "
                        f"{part_dtype} {part_shape}")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"part {part} holds NaN or Inf"
        return None

    def describe(self) -> str:
        """The codec with its options, as checkpoints record it (a resume must use the same)."""
        return self.name

    def size(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Bytes this codec sends for a tensor of ``shape`` and ``dtype`` (known before anything is encoded)."""
        return sum(math.prod(s) * torch.empty((), dtype=d).element_size()
                   for s, d in self.part_specs(shape, dtype).values())


def parts_bytes(parts: Parts) -> int:
    """Bytes of what travels: the parts' data, ``len()`` of each part's raw buffer summed."""
    return sum(t.numel() * t.element_size() for t in parts.values())


_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make ``cls`` available as ``--upload_codec`` / ``--download_codec`` ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"codec {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def codec_class(name: str) -> type[Codec]:
    """The registered codec ``name``; a ValueError listing the registered ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"codec {name!r} is unknown; use one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def codec_names() -> list[str]:
    """The registered codec names."""
    return sorted(_REGISTRY)
