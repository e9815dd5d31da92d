"""Compression of what travels between the server and its clients: one registered codec per scheme.

``--upload_codec`` encodes each client's update (y - x, or y itself when nothing is lossy),
``--download_codec`` the start state the server sends; ``federated_learning.wire`` applies them.
Codecs: ``none`` (the default), ``bf16``, ``fp16`` (``cast``), ``int8`` (per-tensor or per-row
scales, optional stochastic rounding), ``topk`` (with error feedback; upload only).
"""

from federated_learning.codecs import cast, int8, topk  # noqa: F401  (registers the codecs)
from federated_learning.codecs._base import Codec, Parts, codec_class, codec_names, parts_bytes, register_codec

__all__ = ["Codec", "Parts", "build_codec", "codec_class", "codec_names", "parts_bytes", "register_codec"]


def build_codec(name: str, *, topk_fraction: float = 0.01, int8_scale: str = "tensor",
                stochastic_rounding: bool = False) -> Codec:
    """The codec ``name`` with the flags that concern it (the others are ignored)."""
    cls = codec_class(name)
    if cls is int8.Int8:
        return int8.Int8(int8_scale=int8_scale, stochastic_rounding=stochastic_rounding)
    if cls is topk.TopK:
        return topk.TopK(topk_fraction=topk_fraction)
    return cls()
