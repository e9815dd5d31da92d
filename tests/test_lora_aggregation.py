"""The LoRA-aware algorithms' updates against hand-computed references (fp32, the tiny model and plain tensors).

The effective weight of an adapted layer is measured from the model itself: the layer applied to the identity
matrix (eval mode, no dropout) is W_effᵀ, with the base, the adapter and any merged delta as the forward uses them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from peft.tuners.lora import LoraLayer

from config import FedArguments, RunConfig, ScriptArguments
from federated_learning.aggregators import get_aggregator
from federated_learning.aggregators.flexlora import svd_factors
from federated_learning.build import build_round_loop
from federated_learning.checks import client_ranks
from federated_learning.lora_ranks import factor_pairs, pad_rank, slice_rank
from federated_learning.merged_delta import merged_key
from federated_learning.state import get_state
from federated_learning.types import ClientUpdate
from tests.peft_models import peft_model_with_active_lora
from tests.transport import uncompressed

SCALE = 8 / 4  # peft_model_with_active_lora: alpha 8, r 4


@torch.no_grad()
def effective_weights(model: Any) -> dict[str, torch.Tensor]:
    """{layer name: W_eff} of every LoRA layer, read through the layer's own forward."""
    model.eval()
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            eye = torch.eye(module.in_features)
            out[name] = module(eye).T.clone()
    return out


@torch.no_grad()
def base_weights(model: Any) -> dict[str, torch.Tensor]:
    """{layer name: W0}: the same layers with the adapter (and so the merged delta) disabled."""
    with model.disable_adapter():
        return effective_weights(model)


def _cfg(fed_alg: str, ranks: str | None, **fed: Any) -> RunConfig:
    return RunConfig("sft", ScriptArguments(seed=1, peft_lora_r=4),
                     FedArguments(fed_alg=fed_alg, num_clients=3, sample_clients=3, num_rounds=1, save_model_freq=5,
                                  client_lora_ranks=ranks, **fed))


def _random_replies(sizes: dict[int, int]) -> tuple[Any, dict[int, ClientUpdate]]:
    """A client runner whose clients send their start factors plus noise, at their rank, with ``sizes`` examples."""
    sent: dict[int, ClientUpdate] = {}

    def replies(aggregator: Any, tasks: Any, starts: Any) -> list[ClientUpdate]:
        updates = []
        generator = torch.Generator().manual_seed(5)
        for task, start in zip(tasks, starts, strict=True):
            keys = aggregator.client_class.sent_keys(task.server_round, start)
            params = {k: start[k] + 0.3 * torch.randn(start[k].shape, generator=generator) for k in keys}
            sent[task.client_id] = ClientUpdate(task.client_id, params, sizes[task.client_id], {"train_loss": 1.0})
            updates.append(sent[task.client_id])
        return updates

    return replies, sent


@pytest.mark.parametrize(("fed_alg", "ranks"), [("flora", None), ("flora", "1,2,4"), ("fedex_lora", None)])
def test_one_round_changes_the_model_by_the_exact_mean_product(
    tmp_path: Path, tiny_model_dir: Path, fed_alg: str, ranks: str | None
) -> None:
    """W_eff − W0 after a round = s Σ_k p_k B_k A_k over the clients' own factors (p_k by example counts)."""
    model = peft_model_with_active_lora(tiny_model_dir)
    sizes = {0: 10, 1: 20, 2: 30}
    replies, sent = _random_replies(sizes)
    cfg = _cfg(fed_alg, ranks)
    loop = build_round_loop(cfg, model, None, [], tmp_path, None, client_runner=uncompressed(replies),
                            client_sizes=sizes)
    w0 = base_weights(model)
    loop.run()
    if ranks:
        assert {cid: int(u.params[next(k for k in u.params if "lora_A" in k)].shape[0])
                for cid, u in sent.items()} == client_ranks(cfg)
    after = effective_weights(model)
    for layer, weight in base_weights(model).items():  # M is part of the adapter: disabling it shows W0 again
        torch.testing.assert_close(weight, w0[layer], rtol=0, atol=0)
    total = sum(sizes.values())
    for layer, weight in after.items():
        expected = torch.zeros_like(weight, dtype=torch.float64)
        for cid, update in sent.items():
            a = update.params[f"{layer}.lora_A.weight"].double()
            b = update.params[f"{layer}.lora_B.weight"].double()
            expected += sizes[cid] / total * SCALE * (b @ a)
        change = (weight - w0[layer]).double()
        assert float((change - expected).norm() / expected.norm()) < 1e-5, layer


def _state(rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for layer, (out_f, in_f) in {"l.q": (6, 8), "l.v": (4, 8)}.items():
        state[f"{layer}.lora_A.weight"] = torch.randn(rank, in_f, generator=generator)
        state[f"{layer}.lora_B.weight"] = torch.randn(out_f, rank, generator=generator)
    return state


def _with_merged(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    merged = {merged_key(a): torch.zeros(state[b].shape[0], state[a].shape[1])
              for a, b in factor_pairs(list(state)).values()}
    return {**state, **merged}


def test_flexlora_hands_each_client_the_svd_truncation_of_the_mean_update() -> None:
    """Round 1 starts from the global adapter; then ΔW = Σ p_k B_k A_k, and a rank-r client gets U_r Σ_r V_rᵀ."""
    aggregator = get_aggregator("flexlora")
    global_params = _with_merged(_state())
    assert aggregator.client_start(0, 0, global_params) == {k: v for k, v in global_params.items() if "merged" not in k}
    updates = [ClientUpdate(cid, slice_rank(_state(seed=cid + 1), rank), n, {})
               for cid, rank, n in ((0, 1, 10), (1, 2, 30), (2, 4, 60))]
    new = aggregator.aggregate(global_params, updates, 1)
    for a_key, b_key in factor_pairs(list(global_params)).values():
        delta = sum(n / 100 * (u.params[b_key] @ u.params[a_key]) for u, n in zip(updates, (10, 30, 60), strict=True))
        torch.testing.assert_close(new[merged_key(a_key)], delta, rtol=1e-5, atol=1e-6)
        assert not new[b_key].any()  # the global model is W0 + s·ΔW: its LoRA adds nothing
        u, s, vh = torch.linalg.svd(delta)
        for rank in (1, 2, 4):
            start = slice_rank(aggregator.client_start(0, 1, new), rank)
            got = start[b_key] @ start[a_key]
            best = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
            torch.testing.assert_close(got, best, rtol=1e-5, atol=1e-5)
            # Eckart–Young: the error is the norm of the dropped singular values
            assert float((delta - got).norm()) == pytest.approx(float(s[rank:].norm()), rel=1e-4, abs=1e-5)
        assert merged_key(a_key) not in aggregator.client_start(0, 1, new)  # clients never receive ΔW


def test_svd_factors_reconstruct_a_low_rank_matrix() -> None:
    delta = torch.randn(6, 2) @ torch.randn(2, 5)
    b, a = svd_factors(delta, 2)
    assert b.shape == (6, 2) and a.shape == (2, 5)
    torch.testing.assert_close(b @ a, delta, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("fed_alg", "frozen", "round_"), [
    ("ffa_lora", "lora_A", 1), ("ffa_lora", "lora_A", 2), ("fedsa_lora", "lora_B", 1),
    ("rolora", "lora_A", 1), ("rolora", "lora_B", 2), ("rolora", "lora_A", 3),
])
def test_factor_methods_average_what_they_send_and_keep_the_rest(fed_alg: str, frozen: str, round_: int) -> None:
    """FFA-LoRA never changes A, FedSA-LoRA never touches B (it is the clients'), RoLoRA alternates B, A, B, ..."""
    aggregator = get_aggregator(fed_alg)
    global_params = _state()
    keys = aggregator.client_class.sent_keys(round_ - 1, global_params)
    assert keys and all(frozen not in k for k in keys)
    updates = [ClientUpdate(cid, {k: _state(seed=cid + 1)[k] for k in keys}, n, {}) for cid, n in ((0, 1), (1, 3))]
    new = aggregator.aggregate(global_params, updates, round_)
    for key, value in global_params.items():
        if frozen in key:
            assert torch.equal(new[key], value)
        else:
            torch.testing.assert_close(new[key], 0.25 * updates[0].params[key] + 0.75 * updates[1].params[key])
    client = aggregator.client_class()
    assert client.frozen_keys(round_ - 1, global_params) == ({k for k in global_params if frozen in k}
                                                             if fed_alg != "fedsa_lora" else set())


def test_fedex_residual_makes_the_merged_model_the_mean_model() -> None:
    """M_new + B̄Ā = M_old + Σ p_k B_k A_k, layer by layer."""
    global_params = _with_merged(_state())
    updates = [ClientUpdate(cid, _state(seed=cid + 1), n, {}) for cid, n in ((0, 1), (1, 2), (2, 1))]
    new = get_aggregator("fedex_lora").aggregate(global_params, updates, 1)
    for a_key, b_key in factor_pairs(list(global_params)).values():
        mean_product = sum(w * (u.params[b_key] @ u.params[a_key]) for u, w in zip(updates, (0.25, 0.5, 0.25),
                                                                                      strict=True))
        torch.testing.assert_close(new[merged_key(a_key)] + new[b_key] @ new[a_key], mean_product)
        torch.testing.assert_close(new[a_key], sum(w * u.params[a_key] for u, w in zip(updates, (0.25, 0.5, 0.25),
                                                                                          strict=True)))


def test_flora_starts_a_fresh_seeded_lora_every_round() -> None:
    global_params = _with_merged(_state())
    updates = [ClientUpdate(0, _state(seed=1), 1, {})]
    first = get_aggregator("flora", seed=3).aggregate(global_params, updates, 1)
    again = get_aggregator("flora", seed=3).aggregate(global_params, updates, 1)
    later = get_aggregator("flora", seed=3).aggregate(global_params, updates, 2)
    for key in global_params:
        assert torch.equal(first[key], again[key])
        if "lora_B" in key:
            assert not first[key].any()
        if "lora_A" in key:
            assert not torch.equal(first[key], later[key]) and not torch.equal(first[key], global_params[key])
            bound = 1 / math.sqrt(first[key].shape[1])  # PEFT's Kaiming-uniform(a=√5) bound
            assert float(first[key].abs().max()) <= bound


def test_hetlora_weighs_by_update_norm_pads_and_tracks_pruned_ranks() -> None:
    global_params = _state()
    aggregator = get_aggregator("hetlora", hetlora_min_rank=1)
    small = ClientUpdate(0, slice_rank(_state(seed=1), 2), 100, {"lora_rank": 1})  # pruned to 1: its tail is ignored
    large = ClientUpdate(1, {k: 3 * v for k, v in _state(seed=2).items()}, 1, {"lora_rank": 7})  # 7 > its rank 4
    new = aggregator.aggregate(global_params, [small, large], 1)
    pairs = list(factor_pairs(list(global_params)).values())
    norms = [math.sqrt(sum(float((u[b] @ u[a]).square().sum()) for a, b in pairs))
             for u in (slice_rank(small.params, 1), large.params)]
    p = [n / sum(norms) for n in norms]
    for key, value in global_params.items():
        expected = p[0] * pad_rank(value, key, slice_rank(small.params, 1)[key]) + p[1] * large.params[key]
        torch.testing.assert_close(new[key], expected)
    assert aggregator.client_rank(0, 2) == 1 and aggregator.client_rank(1, 4) == 4  # 7 is not believed
    restored = get_aggregator("hetlora")
    restored.load_state_dict(aggregator.state_dict())
    assert restored.client_rank(0, 2) == 1
    with pytest.raises(ValueError, match="whole number"):
        restored.load_state_dict({"ranks": {"0": 0}})


def test_lower_rank_updates_pad_with_zeros_in_fedavg_and_are_refused_above_the_global_rank() -> None:
    global_params = _state()
    low = ClientUpdate(0, slice_rank(_state(seed=1), 2), 1, {})
    new = get_aggregator("fedavg").aggregate(global_params, [low, ClientUpdate(1, _state(seed=2), 1, {})], 1)
    a_key = "l.q.lora_A.weight"
    torch.testing.assert_close(new[a_key][2:], 0.5 * _state(seed=2)[a_key][2:])  # averaged with zeros
    too_high = ClientUpdate(0, _state(rank=5, seed=1), 1, {})
    with pytest.raises(ValueError, match="has shape"):
        get_aggregator("fedavg").aggregate(global_params, [too_high], 1)
    mixed = ClientUpdate(0, {**_state(seed=1), a_key: _state(seed=1)[a_key][:2]}, 1, {})
    with pytest.raises(ValueError, match="different ranks"):
        get_aggregator("fedavg").aggregate(global_params, [mixed], 1)


@pytest.mark.parametrize(("spec", "message"), [
    ("4,x", "whole numbers separated by commas"), ("4,16", "from 1 to --peft_lora_r 8"),
    ("2,4", "largest rank .4. must be the global adapter's"), ("0,8", "from 1 to"),
])
def test_client_lora_ranks_errors_name_the_flag(spec: str, message: str) -> None:
    cfg = RunConfig("sft", ScriptArguments(peft_lora_r=8), FedArguments(num_clients=3, client_lora_ranks=spec))
    with pytest.raises(ValueError, match=f"--client_lora_ranks {spec}: .*{message}"):
        client_ranks(cfg)


def test_client_lora_ranks_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "ranks.json"
    path.write_text('{"0": 2, "1": 8, "2": 4}')
    cfg = RunConfig("sft", ScriptArguments(peft_lora_r=8), FedArguments(num_clients=3, client_lora_ranks=str(path)))
    assert client_ranks(cfg) == {0: 2, 1: 8, 2: 4}
    path.write_text('{"0": 2, "1": 8}')
    with pytest.raises(ValueError, match="missing \\[2\\]"):
        client_ranks(cfg)
    cycled = RunConfig("sft", ScriptArguments(peft_lora_r=8), FedArguments(num_clients=4, client_lora_ranks="8,2"))
    assert client_ranks(cycled) == {0: 8, 1: 2, 2: 8, 3: 2}


def test_merged_delta_round_trips_through_a_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    """What a checkpoint of a merging method holds reloads into the same effective model."""
    from federated_learning.merged_delta import attach_merged_deltas, fold_into_base, load_merged_deltas

    model = peft_model_with_active_lora(tiny_model_dir)
    buffers = attach_merged_deltas(model)
    with torch.no_grad():
        for buffer in buffers.values():
            buffer.normal_(0, 0.05)
    model.save_pretrained(tmp_path)
    from federated_learning.merged_delta import save_merged_deltas

    save_merged_deltas(model, tmp_path)
    want = effective_weights(model)
    other = peft_model_with_active_lora(tiny_model_dir)
    assert load_merged_deltas(other, tmp_path)
    for layer, weight in effective_weights(other).items():
        torch.testing.assert_close(weight, want[layer])
    fold_into_base(other)
    with other.disable_adapter():
        folded = effective_weights(other)
    for layer, weight in effective_weights(other).items():  # W0 + s·M now, and the adapter on top of it
        torch.testing.assert_close(weight, want[layer], rtol=1e-5, atol=1e-6)
        assert not torch.equal(folded[layer], base_weights(peft_model_with_active_lora(tiny_model_dir))[layer])
    assert get_state(attach_merged_deltas(other)).keys() == buffers.keys()


def test_hetlora_hook_adds_the_penalty_gradient_and_prunes_when_the_tail_shrinks() -> None:
    """The added gradient is λ ∂(Σ ‖B_tail‖‖A_tail‖)/∂θ (checked against autograd); pruning zeroes the tail."""
    from federated_learning.aggregators.hetlora import HetLoraHook

    state = _state(rank=4, seed=7)
    params = {k: torch.nn.Parameter(v.clone()) for k, v in state.items()}
    for p in params.values():
        p.grad = torch.zeros_like(p)
    hook = HetLoraHook(params, rank=4, gamma=0.5, lam=0.3, min_rank=1)  # tail: components 2, 3
    hook.on_pre_optimizer_step(None, None, None)
    leaves = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    penalty = sum(leaves[b][:, 2:4].norm() * leaves[a][2:4].norm() for a, b in factor_pairs(list(state)).values())
    (0.3 * penalty).backward()
    for key, param in params.items():
        torch.testing.assert_close(param.grad, leaves[key].grad)
    hook.on_train_end(None, None, None)
    assert hook.metrics() == {"lora_rank": 4}  # the tail did not shrink: no pruning
    with torch.no_grad():
        for key, param in params.items():
            (param[2:] if "lora_A" in key else param[:, 2:]).mul_(0.5)
    hook.on_train_end(None, None, None)
    assert hook.metrics() == {"lora_rank": 2}
    assert all(not (p[2:] if "lora_A" in k else p[:, 2:]).any() for k, p in params.items())


def test_frozen_factors_get_no_gradient_even_when_peft_turns_them_back_on(tiny_model_dir: Path) -> None:
    """TRL's DPO reference pass ends in PEFT's set_adapter, which sets requires_grad on every LoRA weight again."""
    from federated_learning.client import frozen
    from federated_learning.state import trainable_parameters

    model = peft_model_with_active_lora(tiny_model_dir)
    params = trainable_parameters(model)
    a_params = [p for k, p in params.items() if "lora_A" in k]
    with frozen(a_params):
        assert not any(p.requires_grad for p in a_params)
        model.base_model.set_adapter("default")  # what the reference pass leaves behind
        assert all(p.requires_grad for p in a_params)
        model(input_ids=torch.tensor([[1, 5, 9, 13]]), labels=torch.tensor([[1, 5, 9, 13]])).loss.backward()
        assert all(not p.grad.any() for p in a_params)
        assert any(p.grad.any() for k, p in params.items() if "lora_B" in k)
    assert all(p.requires_grad for p in a_params)
    with frozen([a_params[0], a_params[0]]):  # twice: one hook
        assert not a_params[0].requires_grad
    assert a_params[0].requires_grad and not a_params[0]._backward_hooks


def test_fedsa_keeps_only_what_accepted_clients_trained(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A client whose update the server rejects (here: NaN) keeps nothing the global model's evaluation would use."""
    from datasets import Dataset

    class Trainer:  # client 1 diverges everywhere (rejected), client 2 only in the B it keeps (sent A is fine)
        def train(self, client_id: int, rows: Any, learning_rate: float, seed: int, hooks: Any) -> dict[str, float]:
            with torch.no_grad():
                for key, param in loop.trainable.items():
                    broken = client_id == 1 or (client_id == 2 and "lora_B" in key)
                    param.add_(float("nan") if broken else 0.5)
            return {"train_loss": 1.0}

    model = peft_model_with_active_lora(tiny_model_dir)
    shards = [Dataset.from_dict({"x": list(range(8))}) for _ in range(3)]
    cfg = _cfg("fedsa_lora", None)
    loop = build_round_loop(cfg, model, Trainer(), shards, tmp_path, None)  # type: ignore[arg-type]
    loop.run()
    assert sorted(loop.personal.states) == [0]
    assert all(torch.isfinite(t).all() for state in loop.personal.states.values() for t in state.values())


def test_fedsa_on_flower_is_not_resumed_and_its_checkpoints_are_not_evaluated_as_they_are(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import json

    from evaluation.cli import EvalArguments, validate

    model = peft_model_with_active_lora(tiny_model_dir)
    cfg = RunConfig("sft", ScriptArguments(seed=1, peft_lora_r=4, resume_from_checkpoint=str(tmp_path)),
                    FedArguments(fed_alg="fedsa_lora", num_clients=3))
    with pytest.raises(ValueError, match="keep part of the adapter on their SuperNodes"):
        build_round_loop(cfg, model, None, [], tmp_path, None, client_runner=lambda *a: [])
    # A Flower run's checkpoint (no kept states) is refused by the simulation too: its clients would restart.
    flower = build_round_loop(dataclasses.replace(cfg, script=ScriptArguments(seed=1, peft_lora_r=4)), model, None,
                              [], tmp_path / "f", None, client_runner=lambda *a: [])
    server_state = flower.server_state()
    assert "personal" not in server_state
    simulation = build_round_loop(dataclasses.replace(cfg, script=ScriptArguments(seed=1, peft_lora_r=4)), model,
                                  None, [], tmp_path / "s", None)
    with pytest.raises(ValueError, match="holds no client's kept state"):
        simulation.restore(1, get_state(simulation.trainable), server_state)
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "federated_state.json").write_text(json.dumps({"rounds_done": 1, "fed_alg": "fedsa_lora"}))
    with pytest.raises(ValueError, match="this checkpoint holds none .a Flower run's SuperNodes keep them"):
        validate(EvalArguments(adapter=[str(tmp_path)]), [])
    (tmp_path / "federated_state.json").write_text(json.dumps({"rounds_done": 1, "fed_alg": "fedsa_lora",
                                                               "personal/sizes/0": 5}))
    with pytest.raises(ValueError, match="--personal mean"):
        validate(EvalArguments(adapter=[str(tmp_path)]), [])


def test_dpo_reference_never_sees_the_merged_delta(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The reference policy (the base, or the ``ref`` adapter) computes without M; the policy with it."""
    from federated_learning.merged_delta import attach_merged_deltas
    from utils.model import attach_reference_adapter, reference_policy

    model = peft_model_with_active_lora(tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    model.eval()
    with torch.no_grad():
        with model.disable_adapter():
            base = model(ids).logits
        policy = model(ids).logits
        model.save_pretrained(tmp_path / "ref")  # a reference adapter: the policy's LoRA without M
        for buffer in attach_merged_deltas(model).values():
            buffer.normal_(0, 0.05)
        with_m = model(ids).logits
        with reference_policy(model):
            reference = model(ids).logits
        attach_reference_adapter(model, tmp_path / "ref")
        model.eval()
        with reference_policy(model):
            ref_adapter = model(ids).logits
        after = model(ids).logits
    assert not torch.allclose(with_m, policy)  # M changes the policy
    torch.testing.assert_close(reference, base)
    torch.testing.assert_close(ref_adapter, policy)
    torch.testing.assert_close(after, with_m)  # back to the trained adapter, with M
