"""Shared machinery of the bundled datasets: split names, held-out keys and private RNGs.

Train and test are drawn from disjoint sets of *combinations* (number pairs, phrase pairs,
templates), decided by a checksum of a key string. The checksum (``zlib.crc32``) is stable across
processes and Python versions, unlike ``hash()`` which is salted per process.
"""

from __future__ import annotations

import random
import zlib

SPLITS = ("train", "test")


def check_split(split: str) -> None:
    """Fail with the valid choices when ``split`` is not train/test."""
    if split not in SPLITS:
        raise ValueError(f"bundled datasets have splits {SPLITS}, got {split!r}")


def is_held_out(key: str, fraction: float) -> bool:
    """Whether the combination named by ``key`` belongs to the test side (about ``fraction`` of keys)."""
    return zlib.crc32(key.encode("utf-8")) % 10_000 < fraction * 10_000


def allowed(key: str, split: str, fraction: float) -> bool:
    """Whether ``split`` may use the combination named by ``key``: test only held-out keys, train the rest."""
    return is_held_out(key, fraction) == (split == "test")


def private_rng(dataset: str, split: str) -> random.Random:
    """A fresh RNG seeded from the dataset and split names; the global ``random`` state is never touched."""
    return random.Random(zlib.crc32(f"{dataset}/{split}".encode()))
