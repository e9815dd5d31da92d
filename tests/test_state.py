"""Adapter state arithmetic and checkpoint (de)serialisation."""

from __future__ import annotations

import torch

from federated_learning.checkpoint import flatten, unflatten
from federated_learning.state import is_finite, num_bytes, subtract, weighted_average


def test_weighted_average_by_hand() -> None:
    a = {"w": torch.tensor([1.0, 2.0])}
    b = {"w": torch.tensor([3.0, 6.0])}
    out = weighted_average([a, b], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0]))
    assert torch.equal(a["w"], torch.tensor([1.0, 2.0]))  # inputs untouched


def test_weighted_average_keeps_dtype() -> None:
    a = {"w": torch.ones(3, dtype=torch.bfloat16)}
    assert weighted_average([a, a], [2, 5])["w"].dtype == torch.bfloat16


def test_identical_states_average_to_themselves() -> None:
    a = {"x": torch.randn(4, 3), "y": torch.randn(2)}
    out = weighted_average([a, a, a], [5, 1, 9])
    for k in a:
        assert torch.allclose(out[k], a[k], atol=1e-6)


def test_subtract_finite_bytes() -> None:
    a = {"w": torch.tensor([3.0, 1.0])}
    b = {"w": torch.tensor([1.0, 1.0])}
    assert torch.equal(subtract(a, b)["w"], torch.tensor([2.0, 0.0]))
    assert is_finite(a)
    assert not is_finite({"w": torch.tensor([float("nan")])})
    assert num_bytes({"w": torch.zeros(10, dtype=torch.float32), "v": torch.zeros(3, dtype=torch.bfloat16)}) == 46


def test_flatten_roundtrip() -> None:
    tree = {"m": {"a.b": torch.ones(2)}, "step": 3, "name": "x", "clients": {}, "c": {"4": {"k": torch.zeros(1)}}}
    tensors, values = flatten(tree)
    assert set(tensors) == {"m/a.b", "c/4/k"}
    back = unflatten(tensors, values)
    assert back["step"] == 3 and back["name"] == "x" and back["clients"] == {}
    assert torch.equal(back["m"]["a.b"], torch.ones(2)) and torch.equal(back["c"]["4"]["k"], torch.zeros(1))
