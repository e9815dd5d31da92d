"""Codecs (``federated_learning.codecs``) and the transport that applies them (``federated_learning.wire``).

Error bounds are the ones the codecs' docstrings state; bytes are those of the parts that travel.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from config import DOWNLOAD_CODECS, UPLOAD_CODECS
from federated_learning.codecs import build_codec, codec_class, codec_names
from federated_learning.codecs.int8 import Int8
from federated_learning.codecs.topk import TopK
from federated_learning.types import ClientUpdate
from federated_learning.wire import EncodedState, EncodedUpdate, Wire

X = torch.randn(16, 24, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.01, 3.0, 16)[:, None]
NONE = build_codec("none")


def test_the_flag_lists_are_the_registered_codecs() -> None:
    """config lists the names so that flags are checked without torch; they must stay the registry's."""
    assert sorted(UPLOAD_CODECS) == codec_names()
    assert sorted(DOWNLOAD_CODECS) == [n for n in codec_names() if codec_class(n).for_download]


@pytest.mark.parametrize("name", ["none", "bf16", "fp16", "int8", "topk"])
def test_bytes_are_the_length_of_the_parts_raw_buffers(name: str) -> None:
    """``size`` (known before encoding) = the encoded parts' bytes = len() of each part's raw buffer."""
    codec = build_codec(name, topk_fraction=0.1, int8_scale="row")
    parts = codec.encode(X)
    raw = sum(len(t.contiguous().numpy().tobytes()) for t in parts.values())
    assert EncodedState({"w": parts}, {"w": (tuple(X.shape), X.dtype)}).nbytes == raw
    assert codec.size(tuple(X.shape), X.dtype) == raw
    expected = {"none": 4 * X.numel(), "bf16": 2 * X.numel(), "fp16": 2 * X.numel(),
                "int8": X.numel() + 4 * X.shape[0], "topk": 8 * math.ceil(0.1 * X.numel())}[name]
    assert raw == expected


def test_half_precision_casts_round_to_nearest_within_their_relative_bound() -> None:
    for name, dtype, bound in (("bf16", torch.bfloat16, 2 ** -8), ("fp16", torch.float16, 2 ** -11)):
        codec = build_codec(name)
        got = codec.decode(codec.encode(X), tuple(X.shape), torch.float32)
        assert torch.equal(got, X.to(dtype).float())
        assert float(((got - X).abs() / X.abs()).max()) <= bound


@pytest.mark.parametrize("scale", ["tensor", "row"])
def test_int8_round_to_nearest_error_is_at_most_half_a_step(scale: str) -> None:
    codec = Int8(int8_scale=scale)
    parts = codec.encode(X)
    s = X.abs().amax(dim=1, keepdim=True) / 127 if scale == "row" else X.abs().max() / 127
    assert torch.allclose(parts["scale"].reshape(-1), s.reshape(-1))
    error = (codec.decode(parts, tuple(X.shape), torch.float32) - X).abs()
    assert bool((error <= s / 2 * (1 + 1e-6)).all())
    assert int(parts["q"].abs().max()) == 127  # the largest value maps to the last level
    if scale == "row":  # per-row scales: small rows keep their precision
        tensor_error = (Int8().decode(Int8().encode(X), tuple(X.shape), torch.float32) - X).abs()
        assert float(error[0].max()) < float(tensor_error[0].max()) / 10


def test_int8_stochastic_rounding_is_unbiased_and_below_one_step() -> None:
    codec = Int8(stochastic_rounding=True)
    s = float(X.abs().max()) / 127
    generator = torch.Generator().manual_seed(3)
    draws = torch.stack([codec.decode(codec.encode(X, generator), tuple(X.shape), torch.float32)
                         for _ in range(400)])
    assert float((draws - X).abs().max()) < s
    # mean of 400 draws: standard error <= s / (2 sqrt(400)) = s / 40 per value; 5 standard errors
    assert float((draws.mean(0) - X).abs().max()) < 5 * s / 40
    assert not torch.equal(draws[0], draws[1])


def test_int8_of_zeros_is_zeros() -> None:
    codec = Int8(int8_scale="row")
    zeros = torch.zeros(3, 5)
    assert torch.equal(codec.decode(codec.encode(zeros), (3, 5), torch.float32), zeros)


def test_topk_sends_exactly_k_values_the_largest() -> None:
    codec = TopK(topk_fraction=0.05)
    parts = codec.encode(X)
    k = math.ceil(0.05 * X.numel())
    assert parts["indices"].shape == parts["values"].shape == (k,)
    kept = X.reshape(-1).abs()[parts["indices"].long()]
    assert float(kept.min()) >= float(torch.topk(X.reshape(-1).abs(), k).values.min())
    assert int((codec.decode(parts, tuple(X.shape), torch.float32) != 0).sum()) == k
    assert TopK(topk_fraction=1e-9).k(10) == 1 and TopK(topk_fraction=1.0).k(10) == 10
    assert TopK(topk_fraction=0.07).k(100) == 7  # not ceil(7.000000000000001) = 8


def test_topk_error_feedback_sent_plus_residual_is_the_sum_of_the_true_updates() -> None:
    """Over 6 rounds: Σ sent + e = Σ Δ (Stich et al.'s memory), and the residual is what was not sent."""
    wire = Wire(TopK(topk_fraction=0.1), NONE, seed=7)
    start = {"a.lora_A.weight": torch.zeros(4, 8), "a.lora_B.weight": torch.zeros(8, 4)}
    generator = torch.Generator().manual_seed(1)
    residual = None
    true_total = {k: torch.zeros_like(v) for k, v in start.items()}
    sent_total = {k: torch.zeros_like(v) for k, v in start.items()}
    for server_round in range(6):
        params = {k: v + torch.randn(v.shape, generator=generator) for k, v in start.items()}
        reply, residual = wire.encode_update(ClientUpdate(0, params, 5, {"train_loss": 1.0}), start, residual,
                                             server_round)
        assert all(p["values"].numel() == math.ceil(0.1 * 32) for p in reply.encoded.parts.values())
        decoded = wire.decode_update(reply, start)
        assert isinstance(decoded, ClientUpdate)
        for key in start:
            true_total[key] += params[key] - start[key]
            sent_total[key] += decoded.params[key] - start[key]
    for key in start:
        torch.testing.assert_close(sent_total[key] + residual[key], true_total[key], rtol=0, atol=1e-5)
        assert float(residual[key].abs().sum()) > 0


def test_without_codecs_the_update_travels_as_the_same_tensors() -> None:
    """none up and down: the start and the trained adapter pass through untouched (the same tensor objects), so a
    run without codecs computes exactly what it did before codecs existed."""
    wire = Wire(NONE, NONE, seed=0)
    assert not wire.sends_updates
    start = {"w": X.clone()}
    assert wire.decode_start(wire.encode_start(start, 0, 0))["w"] is start["w"]
    update = ClientUpdate(0, {"w": X + 1}, 3, {"train_loss": 1.0})
    reply, residual = wire.encode_update(update, start, None, 0)
    assert residual == {} and reply.encoded.nbytes == 4 * X.numel()
    decoded = wire.decode_update(reply, start)
    assert isinstance(decoded, ClientUpdate) and decoded.params["w"] is update.params["w"]


def test_a_lossy_download_is_not_aggregated_as_if_the_client_trained_it() -> None:
    """The client trains from x~ and sends y - x~; the server rebuilds x + (y - x~) from the x it knows."""
    wire = Wire(NONE, build_codec("int8"), seed=0)
    start = {"w": X.clone()}
    received = wire.decode_start(wire.encode_start(start, 0, 0))["w"]
    assert not torch.equal(received, X)
    reply, _ = wire.encode_update(ClientUpdate(0, {"w": received + 0.5}, 3, {"train_loss": 1.0}), {"w": received},
                                  None, 0)
    decoded = wire.decode_update(reply, start)
    assert isinstance(decoded, ClientUpdate)
    torch.testing.assert_close(decoded.params["w"], X + 0.5, rtol=0, atol=1e-6)


def _bad(wire: Wire, **parts: torch.Tensor) -> str:
    reply = EncodedUpdate(0, EncodedState({"w": parts}, {}), 3, {"train_loss": 1.0})
    reason = wire.decode_update(reply, {"w": torch.zeros(4, 5)})
    assert isinstance(reason, str)
    return reason


def test_the_server_refuses_encodings_that_cannot_be_the_codecs() -> None:
    """An attacker controls every part: out-of-range or repeated indices, another k, negative or NaN scales,
    wrong dtypes or shapes, missing parts, NaN patterns: each is refused with the key and the reason."""
    topk = Wire(TopK(topk_fraction=0.1), NONE, 0)  # k = 2 of 20
    values = torch.ones(2)
    assert "outside the tensor's 20 values" in _bad(topk, indices=torch.tensor([3, 20], dtype=torch.int32),
                                                    values=values)
    assert "outside" in _bad(topk, indices=torch.tensor([-1, 2], dtype=torch.int32), values=values)
    assert "repeats an index" in _bad(topk, indices=torch.tensor([4, 4], dtype=torch.int32), values=values)
    assert "(3,)" in _bad(topk, indices=torch.tensor([1, 2, 3], dtype=torch.int32), values=torch.ones(3))
    assert "torch.int64" in _bad(topk, indices=torch.tensor([1, 2]), values=values)
    assert "NaN or Inf" in _bad(topk, indices=torch.tensor([1, 2], dtype=torch.int32),
                                values=torch.tensor([1.0, math.nan]))
    int8 = Wire(Int8(), NONE, 0)
    q = torch.zeros(4, 5, dtype=torch.int8)
    assert "negative" in _bad(int8, q=q, scale=torch.tensor([-1.0]))
    assert "-128" in _bad(int8, q=torch.full((4, 5), -128, dtype=torch.int8), scale=torch.tensor([1.0]))
    assert "NaN or Inf" in _bad(int8, q=q, scale=torch.tensor([math.inf]))
    assert "has parts ['q']" in _bad(int8, q=q)
    assert "torch.float32 (4, 5)" in _bad(int8, q=q.float(), scale=torch.tensor([1.0]))
    bf16 = Wire(build_codec("bf16"), NONE, 0)
    nan_bits = torch.full((4, 5), math.nan).to(torch.bfloat16).view(torch.int16)
    assert "NaN or Inf" in _bad(bf16, bits=nan_bits)
    reply = EncodedUpdate(0, EncodedState({"v": {"bits": nan_bits}}, {}), 3, {})
    assert "lacks 1 keys, e.g. w" in bf16.decode_update(reply, {"w": torch.zeros(4, 5)})


def test_a_whole_state_is_never_sent_down_as_top_k() -> None:
    from config import FedArguments

    with pytest.raises(ValueError, match="--download_codec topk compresses updates only"):
        Wire.from_flags(FedArguments(download_codec="topk"), 0)


def test_a_top_k_run_on_flower_is_not_resumed(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Its residuals live on the SuperNodes: neither a new Flower run nor the simulation can continue them."""
    from config import FedArguments, RunConfig, ScriptArguments
    from federated_learning.build import build_round_loop
    from federated_learning.state import get_state
    from tests.peft_models import peft_model_with_active_lora

    model = peft_model_with_active_lora(tiny_model_dir)
    fed = FedArguments(upload_codec="topk", num_clients=3)
    cfg = RunConfig("sft", ScriptArguments(seed=1, peft_lora_r=4, resume_from_checkpoint=str(tmp_path)), fed)
    with pytest.raises(ValueError, match="keeps its error-feedback residual on its SuperNode"):
        build_round_loop(cfg, model, None, [], tmp_path, None, client_runner=lambda *a: [])
    plain = RunConfig("sft", ScriptArguments(seed=1, peft_lora_r=4), fed)
    flower = build_round_loop(plain, model, None, [], tmp_path / "f", None, client_runner=lambda *a: [])
    assert "residuals" not in flower.server_state()
    simulation = build_round_loop(plain, model, None, [], tmp_path / "s", None)
    with pytest.raises(ValueError, match="holds no client's error-feedback residual"):
        simulation.restore(1, get_state(simulation.trainable), flower.server_state())


def test_a_diverged_round_does_not_poison_the_residual() -> None:
    """A NaN update is refused by the server; the client keeps its last finite residual, so its next round counts."""
    wire = Wire(TopK(topk_fraction=0.25), NONE, seed=0)
    start = {"w": torch.zeros(2, 4)}
    good = ClientUpdate(0, {"w": torch.arange(8.0).reshape(2, 4)}, 3, {"train_loss": 1.0})
    _, residual = wire.encode_update(good, start, None, 0)
    diverged = ClientUpdate(0, {"w": torch.full((2, 4), math.nan)}, 3, {"train_loss": 1.0})
    _, after = wire.encode_update(diverged, start, residual, 1)
    assert torch.equal(after["w"], residual["w"])
    reply, _ = wire.encode_update(good, start, after, 2)
    assert isinstance(wire.decode_update(reply, start), ClientUpdate)


def test_a_residual_follows_its_factor_when_the_rank_changes() -> None:
    """Cut to the leading components when the rank shrank (HetLoRA), zero-padded when it grew."""
    wire = Wire(TopK(topk_fraction=1.0), NONE, seed=0)  # sends everything: the residual only carries over
    kept = {"a.lora_A.weight": torch.ones(4, 3)}
    for rows in (2, 6):
        start = {"a.lora_A.weight": torch.zeros(rows, 3)}
        reply, _ = wire.encode_update(ClientUpdate(0, dict(start), 1, {"train_loss": 1.0}), start, kept, 0)
        sent = wire.decode_update(reply, start)
        assert isinstance(sent, ClientUpdate)
        expected = torch.zeros(rows, 3)
        expected[:min(rows, 4)] = 1.0
        assert torch.equal(sent.params["a.lora_A.weight"], expected)


def test_a_start_the_download_codec_cannot_represent_is_not_sent() -> None:
    wire = Wire(NONE, build_codec("fp16"), seed=0)
    with pytest.raises(ValueError, match="--download_codec fp16 cannot represent w .largest \\|value\\| 1e"):
        wire.encode_start({"w": torch.full((2, 2), 1e5)}, 0, 0)


def test_an_unreadable_reply_still_counts_its_train_message() -> None:
    from federated_learning.traffic import Traffic
    from federated_learning.updates import UnreadableReply

    traffic = Traffic()
    traffic.count(UnreadableReply(0, "malformed", bytes_downloaded=100))
    assert (traffic.uploaded, traffic.downloaded) == (0, 100)


def test_a_resume_with_other_codecs_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from config import FedArguments, RunConfig, ScriptArguments
    from federated_learning.build import build_round_loop
    from federated_learning.state import get_state
    from tests.peft_models import peft_model_with_active_lora

    model = peft_model_with_active_lora(tiny_model_dir)

    def loop(folder: str, **codecs: object) -> object:
        cfg = RunConfig("sft", ScriptArguments(seed=1, peft_lora_r=4), FedArguments(num_clients=3, **codecs))
        return build_round_loop(cfg, model, None, [], tmp_path / folder, None)

    int8 = loop("a", upload_codec="int8")
    state = int8.server_state()
    assert state["codecs"] == "up int8 (tensor scales), down none"
    for other in (loop("b"), loop("c", upload_codec="int8", int8_scale="row")):
        with pytest.raises(ValueError, match="written with codecs up int8 .tensor scales., down none, not up "):
            other.restore(1, get_state(other.trainable), state)
    plain = loop("d")
    legacy = {k: v for k, v in plain.server_state().items() if k != "codecs"}  # a checkpoint from before codecs
    plain.restore(0, get_state(plain.trainable), legacy)
