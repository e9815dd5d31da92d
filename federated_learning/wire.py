"""What travels between the server and a client, encoded by the run's codecs (``federated_learning.codecs``).

Down: the server encodes each client's start state with ``--download_codec``; the client decodes it
(x~, equal to the start x when the codec is lossless). Up: with both codecs ``none`` the client
sends its trained adapter y as it is (bit for bit what a run without codecs sends); otherwise it
sends its update Δ = y - x~ through ``--upload_codec`` and the server rebuilds y = x + Δ^ from
the start x it knows exactly, so a lossy download never leaks into the aggregate as if a client had
trained it. With an error-feedback codec (``topk``) the client adds the residual e it kept from its
last round before encoding, and keeps e' = (Δ + e) - Δ^ for the next (``Codec.error_feedback``).

The server never trusts an encoded update: ``decode_update`` checks its keys against the start's,
and every tensor's parts against what the codec sends for that shape (``Codec.check``), before it
decodes; the decoded update then goes through the same check as any other
(``federated_learning.updates``). Bytes are those of the parts (``EncodedState.nbytes``) in the
simulation; the Flower transport reports the serialized messages' size instead.

Randomness (stochastic rounding) draws from a generator seeded by (seed, direction, client, round),
so every round is reproducible on its own and a resume needs no RNG state.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from federated_learning.codecs import Codec, Parts, build_codec, parts_bytes
from federated_learning.types import ClientUpdate, StateDict

Specs = dict[str, tuple[tuple[int, ...], torch.dtype]]


@dataclass
class EncodedState:
    """A state as it travels: each key's parts, and the shape and dtype it decodes to."""

    parts: dict[str, Parts]
    specs: Specs

    @property
    def nbytes(self) -> int:
        """Bytes of every part's data."""
        return sum(parts_bytes(p) for p in self.parts.values())


@dataclass
class EncodedUpdate:
    """A client's reply as it travels: its encoded adapter (or update), count, metrics and extras.

    ``bytes_uploaded`` / ``bytes_downloaded``: what the transport measured for this client's
    reply and train message (set on the receiving side, never taken from the client's word).
    """

    client_id: int
    encoded: EncodedState
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, StateDict] = field(default_factory=dict)
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0


def _generator(seed: int, direction: str, client_id: int, server_round: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(random.Random(f"codec/{direction}/{seed}/{client_id}/{server_round}").getrandbits(63))
    return generator


def _fit(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``tensor`` cut or zero-padded to ``shape`` (a LoRA factor whose rank changed keeps its leading components)."""
    out = torch.zeros(shape, dtype=tensor.dtype)
    common = tuple(slice(0, min(n, m)) for n, m in zip(tensor.shape, shape, strict=True))
    out[common] = tensor[common]
    return out


def specs_of(state: Mapping[str, torch.Tensor]) -> Specs:
    """Each key's shape and dtype."""
    return {key: (tuple(t.shape), t.dtype) for key, t in state.items()}


@dataclass(frozen=True)
class Wire:
    """The run's two codecs and its seed; both sides of the transport use the same ``Wire``."""

    upload: Codec
    download: Codec
    seed: int

    @classmethod
    def from_flags(cls, fed: object, seed: int) -> Wire:
        """The ``Wire`` of a run's ``FedArguments`` (``--upload_codec``, ``--download_codec`` and their options)."""
        options = {"topk_fraction": fed.topk_fraction, "int8_scale": fed.int8_scale,  # type: ignore[attr-defined]
                   "stochastic_rounding": fed.stochastic_rounding}  # type: ignore[attr-defined]
        download = build_codec(fed.download_codec, **options)  # type: ignore[attr-defined]
        if not download.for_download:
            raise ValueError(f"--download_codec {download.name} compresses updates only, not a whole state")
        return cls(build_codec(fed.upload_codec, **options), download, seed)  # type: ignore[attr-defined]

    def describe(self) -> str:
        """Both codecs with their options, as checkpoints record them."""
        return f"up {self.upload.describe()}, down {self.download.describe()}"

    @property
    def sends_updates(self) -> bool:
        """Whether clients send Δ = y - x~ (a codec is lossy) rather than y itself."""
        return not (self.upload.lossless and self.download.lossless)

    # ------------------------------------------------------------------ down
    def encode_start(self, start: StateDict, client_id: int, server_round: int) -> EncodedState:
        """The server's side: ``start`` as it travels to ``client_id``; a ValueError when the codec cannot
        represent it (fp16 beyond 65504), rather than a client training on Inf."""
        generator = _generator(self.seed, "down", client_id, server_round)
        parts = {k: self.download.encode(t, generator) for k, t in start.items()}
        for key, part in parts.items():
            if self.download.check(part, tuple(start[key].shape), start[key].dtype) is not None:
                raise ValueError(f"--download_codec {self.download.name} cannot represent {key} (largest "
                                 f"|value| {float(start[key].abs().max()):.3g}); use bf16 or int8")
        return EncodedState(parts, specs_of(start))

    def decode_start(self, encoded: EncodedState) -> StateDict:
        """The client's side: the start state x~ it trains from."""
        return {k: self.download.decode(p, *encoded.specs[k]) for k, p in encoded.parts.items()}

    # ------------------------------------------------------------------ up
    @torch.no_grad()
    def encode_update(
        self, update: ClientUpdate, start: StateDict, residual: StateDict | None, server_round: int
    ) -> tuple[EncodedUpdate, StateDict]:
        """The client's side: its update as it travels, and the residual it keeps (empty without error feedback).

        ``start`` is the start state the client trained from (x~, cut to its rank, as ``update.params``);
        ``residual`` what it kept from its last round. A kept key this round does not send stays kept;
        one whose rank changed keeps its leading components (zero-padded when the rank grew). A new
        residual that is not finite (the client's training diverged) is not kept: the old one stays.
        """
        if not self.sends_updates:
            sent = update.params
            return self._reply(update, EncodedState({k: self.upload.encode(t) for k, t in sent.items()},
                                                    specs_of(sent))), {}
        generator = _generator(self.seed, "up", update.client_id, server_round)
        deltas = {k: y.float() - start[k].float() for k, y in update.params.items()}
        residual = dict(residual or {}) if self.upload.error_feedback else {}
        for key, delta in deltas.items():
            if key in residual:
                deltas[key] = delta + _fit(residual[key], delta.shape)
        parts = {k: self.upload.encode(d, generator) for k, d in deltas.items()}
        if self.upload.error_feedback:
            unsent = {k: d - self.upload.decode(parts[k], tuple(d.shape), torch.float32) for k, d in deltas.items()}
            if all(bool(torch.isfinite(t).all()) for t in unsent.values()):
                residual.update(unsent)
        return self._reply(update, EncodedState(parts, specs_of(deltas))), residual

    @staticmethod
    def _reply(update: ClientUpdate, encoded: EncodedState) -> EncodedUpdate:
        return EncodedUpdate(update.client_id, encoded, update.num_examples, update.metrics, update.extras)

    @torch.no_grad()
    def decode_update(self, reply: EncodedUpdate, start: StateDict) -> ClientUpdate | str:
        """The server's side: the client's adapter y (x + Δ^, in the start's dtypes), or why its encoding is refused.

        ``start``: what the server expects back untrained (the client's start, its sent keys, at its rank).
        """
        parts = reply.encoded.parts if isinstance(reply.encoded, EncodedState) else None
        if not isinstance(parts, Mapping):
            return "its encoded adapter is not a mapping of keys to parts"
        params: StateDict = {}
        if not self.sends_updates:  # y itself, which the update check then judges as any update
            for key, value in parts.items():
                if not isinstance(value, Mapping) or set(value) != {"value"}:
                    return f"{key} is not sent as one value part"
                params[key] = value["value"]
            return ClientUpdate(reply.client_id, params, reply.num_examples, reply.metrics, reply.extras)
        missing, unknown = sorted(start.keys() - parts.keys()), sorted(parts.keys() - start.keys(), key=str)
        if missing or unknown:
            return (f"its encoded update lacks {len(missing)} keys, e.g. {missing[0]}" if missing
                    else f"its encoded update has {len(unknown)} unknown keys, e.g. {unknown[0]}")
        for key, x in start.items():
            shape = tuple(x.shape)
            reason = self.upload.check(parts[key], shape, torch.float32)
            if reason is not None:
                return f"{key} ({self.upload.name} codec) {reason}"
            params[key] = (x.float() + self.upload.decode(parts[key], shape, torch.float32)).to(x.dtype)
        return ClientUpdate(reply.client_id, params, reply.num_examples, reply.metrics, reply.extras)
