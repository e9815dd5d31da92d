"""Server-side update rules: hand-computed values per algorithm, invariants for every registered one."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from config import FedArguments
from federated_learning import ClientUpdate, available_aggregators, get_aggregator, get_client_algorithm
from federated_learning.aggregators._hyperparameters import VARIANTS
from federated_learning.aggregators._registry import aggregator_class

X0 = [1.0, -2.0]
# Client deltas (y_i - x) and num_examples for two rounds. Weighted means: round 1 [0.5, 3],
# round 2 [1, 0.5]; unweighted: round 1 [1, 2], round 2 [0, 1].
ROUNDS = [
    [([2.0, 0.0], 1), ([0.0, 4.0], 3)],
    [([-2.0, 2.0], 1), ([2.0, 0.0], 3)],
]
WEIGHTED = [[0.5, 3.0], [1.0, 0.5]]
UNWEIGHTED = [[1.0, 2.0], [0.0, 1.0]]


def _updates(
    x: dict[str, torch.Tensor], deltas: list[tuple[list[float], int]], ids: tuple[int, ...] = (0, 1)
) -> list[ClientUpdate]:
    """Clients whose adapter is x + delta; SCAFFOLD's delta_c set to the same numbers."""
    out = []
    for cid, (delta, n) in zip(ids, deltas, strict=True):
        d = torch.tensor(delta)
        out.append(ClientUpdate(cid, {"w": x["w"] + d}, n, {}, {"delta_c": {"w": d.clone()}}))
    return out


def _run(name: str, rounds: int = 2, **hp: Any) -> list[list[float]]:
    """Global adapter after each of ``rounds`` rounds of the fixed client deltas."""
    agg = get_aggregator(name, num_clients=4, **hp)
    x = {"w": torch.tensor(X0)}
    history = []
    for r in range(rounds):
        x = agg.aggregate(x, _updates(x, ROUNDS[r]), r)
        history.append(x["w"].tolist())
    return history


def _close(actual: list[list[float]], expected: list[list[float]]) -> None:
    torch.testing.assert_close(torch.tensor(actual), torch.tensor(expected), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- closed forms


def test_fedavg_two_rounds() -> None:
    # Round 1: (1*[3,-2] + 3*[1,2]) / 4; round 2: [1.5,1] + (1*[-2,2] + 3*[2,0]) / 4.
    _close(_run("fedavg"), [[1.5, 1.0], [2.5, 1.5]])


def test_fedprox_server_is_fedavg() -> None:
    _close(_run("fedprox", prox_mu=0.5), [[1.5, 1.0], [2.5, 1.5]])


def test_fedavgm_paper_two_rounds() -> None:
    # v1 = [0.5,3], x1 = x0 + 2 v1 = [2,4]; v2 = 0.5 v1 + [1,0.5] = [1.25,2], x2 = [4.5,8].
    _close(_run("fedavgm", server_momentum=0.5, server_lr=2.0), [[2.0, 4.0], [4.5, 8.0]])


def test_fedavgm_openfedllm_two_rounds() -> None:
    # EMA with beta1, first v = Δ̄, no server lr: v1 = [0.5,3], x1 = [1.5,1];
    # v2 = 0.5 v1 + 0.5 [1,0.5] = [0.75,1.75], x2 = [2.25,2.75]. server_* are ignored.
    hp = {"fedopt_variant": "openfedllm", "fedopt_beta1": 0.5, "server_momentum": 0.1, "server_lr": 3.0}
    _close(_run("fedavgm", **hp), [[1.5, 1.0], [2.25, 2.75]])


def test_scaffold_server_two_rounds() -> None:
    agg = get_aggregator("scaffold", num_clients=4, server_lr=2.0)
    x = {"w": torch.tensor(X0)}
    assert agg.client_payload(0) == {}
    # Round 1: clients 0 and 1 send delta_c [2,0] and [0,4].
    x = agg.aggregate(x, _updates(x, ROUNDS[0]), 0)
    _close([x["w"].tolist()], [[2.0, 4.0]])  # x0 + 2 * [0.5, 3]
    _close([agg.c["w"].tolist()], [[0.5, 1.0]])  # ([2,0] + [0,4]) / 4
    payload = agg.client_payload(1)
    _close([payload["c"]["w"].tolist(), payload["c_i"]["w"].tolist()], [[0.5, 1.0], [0.0, 4.0]])
    assert "c_i" not in agg.client_payload(3)  # never sampled: nothing allocated
    # Round 2: clients 1 and 3 send [-2,2] and [2,0].
    x = agg.aggregate(x, _updates(x, ROUNDS[1], ids=(1, 3)), 1)
    # Weighted Δ̄ = (1*[-2,2] + 3*[2,0]) / 4 = [1, 0.5]; x2 = [2,4] + 2 * [1,0.5].
    _close([x["w"].tolist()], [[4.0, 5.0]])
    _close([agg.c["w"].tolist()], [[0.5, 1.5]])  # [0.5,1] + ([-2,2] + [2,0]) / 4
    assert sorted(agg.c_i) == [0, 1, 3]
    _close(
        [agg.c_i[0]["w"].tolist(), agg.c_i[1]["w"].tolist(), agg.c_i[3]["w"].tolist()],
        [[2.0, 0.0], [-2.0, 6.0], [2.0, 0.0]],
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_scaffold_server_lr_one_is_fedavg_bit_for_bit(variant: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = {"w": torch.randn(5, generator=gen)}
    updates = [
        ClientUpdate(i, {"w": torch.randn(5, generator=gen)}, n, {}, {"delta_c": {"w": torch.randn(5, generator=gen)}})
        for i, n in enumerate([3, 5, 7])
    ]
    scaffold = get_aggregator("scaffold", num_clients=3, fedopt_variant=variant, server_lr=1.0)
    assert torch.equal(scaffold.aggregate(x, updates, 0)["w"], get_aggregator("fedavg").aggregate(x, updates, 0)["w"])


def _fedopt_reference(name: str, variant: str, eta: float, tau: float, b1: float, b2: float) -> list[list[float]]:
    """Element-wise, plain-float transcription of the update equations in the issue / OpenFedLLM."""
    x, m, v = list(X0), [0.0, 0.0], [tau**2, tau**2]
    history = []
    for r in range(2):
        delta = WEIGHTED[r] if variant == "paper" else UNWEIGHTED[r]
        for j in range(2):
            d = delta[j]
            if variant == "openfedllm" and (name == "fedadagrad" or r == 0):
                m[j] = d
            else:
                m[j] = b1 * m[j] + (1 - b1) * d
            sq = d * d if variant == "paper" else m[j] * m[j]
            if name == "fedadagrad":
                v[j] = v[j] + sq
            elif name == "fedyogi":
                v[j] = v[j] - (1 - b2) * sq * math.copysign(1.0, v[j] - sq) * (v[j] != sq)
            else:
                v[j] = b2 * v[j] + (1 - b2) * sq
            x[j] = x[j] + eta * m[j] / (math.sqrt(v[j]) + tau)
        history.append(list(x))
    return history


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["fedadagrad", "fedyogi", "fedadam"])
def test_fedopt_two_rounds(name: str, variant: str) -> None:
    hp = {"fedopt_eta": 0.5, "fedopt_tau": 0.1, "fedopt_beta1": 0.6, "fedopt_beta2": 0.8, "fedopt_variant": variant}
    expected = _fedopt_reference(name, variant, 0.5, 0.1, 0.6, 0.8)
    _close(_run(name, **hp), expected)


def test_fedadam_first_round_literal() -> None:
    # Guards the reference above with numbers worked by hand: m = 0.4 * [0.5, 3] = [0.2, 1.2];
    # v = 0.8 * 0.01 + 0.2 * [0.25, 9] = [0.058, 1.808]; x = x0 + 0.5 * m / (sqrt(v) + 0.1).
    hp = {"fedopt_eta": 0.5, "fedopt_tau": 0.1, "fedopt_beta1": 0.6, "fedopt_beta2": 0.8}
    expected = [1.0 + 0.1 / (0.058**0.5 + 0.1), -2.0 + 0.6 / (1.808**0.5 + 0.1)]
    _close(_run("fedadam", rounds=1, **hp), [expected])
    assert abs(expected[0] - 1.2934) < 1e-4 and abs(expected[1] - -1.5847) < 1e-4


def test_fedopt_variants_differ() -> None:
    """The OpenFedLLM variant is a different algorithm, not a relabelling."""
    for name in ["fedavgm", "fedadagrad", "fedyogi", "fedadam"]:
        assert _run(name) != _run(name, fedopt_variant="openfedllm"), name


def test_fedopt_keeps_bf16_and_steps_in_float32() -> None:
    x = {"w": torch.tensor([1.0, 1.0], dtype=torch.bfloat16)}
    agg = get_aggregator("fedadam", fedopt_eta=1e-3, fedopt_tau=1e-3)
    out = agg.aggregate(x, [ClientUpdate(0, {"w": torch.tensor([2.0, 1.0], dtype=torch.bfloat16)}, 1)], 0)
    assert out["w"].dtype == torch.bfloat16 and agg.m["w"].dtype == torch.float32
    # m = 0.1, v = 0.99e-6 + 0.01 -> step ~ 1e-3 * 0.1 / 0.1 = 1e-3; bf16 rounds 1.001 to 1.0.
    assert out["w"].tolist() == [1.0, 1.0]
    assert agg.v["w"][0].item() == pytest.approx(0.99e-6 + 0.01, rel=1e-5)


# ----------------------------------------------------------------------------- invariants

ALGORITHMS = [(name, variant) for name in available_aggregators() for variant in VARIANTS]


def _make(name: str, variant: str, **hp: Any) -> Any:
    return get_aggregator(name, num_clients=5, fedopt_variant=variant, **hp)


def _random_round(x: dict[str, torch.Tensor], seed: int, ids: tuple[int, ...] = (0, 2, 4),
                  agg: Any = None, server_round: int = 1) -> list[ClientUpdate]:
    """Random updates of the keys ``agg``'s clients send in ``server_round`` (1-based; default: every key)."""
    gen = torch.Generator().manual_seed(seed)
    keys = list(x) if agg is None else agg.client_class.sent_keys(server_round - 1, x)
    updates = []
    for i in ids:
        params = {k: (x[k].float() + 0.1 * torch.randn(x[k].shape, generator=gen)).to(x[k].dtype) for k in keys}
        delta_c = {k: torch.randn(x[k].shape, generator=gen) for k in keys}
        # "cluster": IFCA's clients name the cluster they trained (0: the global adapter, as every other's).
        updates.append(ClientUpdate(i, params, 10 + i, {"train_loss": 1.0, "cluster": 0}, {"delta_c": delta_c}))
    return updates


def _global(agg: Any = None) -> dict[str, torch.Tensor]:
    """A one-layer adapter (B in bf16), with its merged delta M for the algorithms that merge into the base."""
    gen = torch.Generator().manual_seed(123)
    x = {
        "layer.lora_A.weight": torch.randn(2, 3, generator=gen),
        "layer.lora_B.weight": torch.randn(3, 2, generator=gen).to(torch.bfloat16),
    }
    if agg is not None and agg.merges_into_base:
        x["layer.merged_delta"] = 0.1 * torch.randn(3, 3, generator=gen)
    return x


def _effective(x: dict[str, torch.Tensor]) -> torch.Tensor:
    """M + B·A: the layer's weight change, whichever part of the state holds it."""
    merged = x.get("layer.merged_delta", torch.zeros(3, 3))
    return merged + x["layer.lora_B.weight"].float() @ x["layer.lora_A.weight"].float()


def test_registry_has_every_issue_algorithm() -> None:
    expected = {"fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam",
                "ffa_lora", "fedsa_lora", "flora", "flexlora", "fedex_lora", "rolora", "hetlora", "ditto", "ifca",
                "fedmedian", "fedtrimmedavg", "krum", "multikrum"}
    assert set(available_aggregators()) == expected


@pytest.mark.parametrize(("name", "variant"), ALGORITHMS)
def test_inputs_not_mutated_and_keys_shapes_dtypes_kept(name: str, variant: str) -> None:
    agg = _make(name, variant)
    x = _global(agg)
    for r in range(1, 3):
        updates = _random_round(x, r, agg=agg, server_round=r)
        x_copy = {k: t.clone() for k, t in x.items()}
        updates_copy = [dataclasses.replace(u, params={k: t.clone() for k, t in u.params.items()},
                                            extras={"delta_c": {k: t.clone() for k, t in u.extras["delta_c"].items()}})
                        for u in updates]
        out = agg.aggregate(x, updates, r)
        for k in x:
            assert torch.equal(x[k], x_copy[k])
        for u, c in zip(updates, updates_copy, strict=True):
            assert all(torch.equal(u.params[k], c.params[k]) for k in u.params)
            assert all(torch.equal(u.extras["delta_c"][k], c.extras["delta_c"][k]) for k in u.params)
        assert out.keys() == x.keys()
        for k in x:
            assert out[k].shape == x[k].shape and out[k].dtype == x[k].dtype
            assert out[k] is not x[k] and torch.isfinite(out[k].float()).all()
        assert not all(torch.equal(out[k], x[k]) for k in x)  # the round did something
        x = out


@pytest.mark.parametrize(("name", "variant"), ALGORITHMS)
def test_clients_returning_global_leave_it_unchanged(name: str, variant: str) -> None:
    """Unchanged: the state, or where the algorithm re-initialises its LoRA (FLoRA, FlexLoRA) the model, M + B·A."""
    agg = _make(name, variant)
    x = _global(agg)
    keys = agg.client_class.sent_keys(0, x)
    updates = [ClientUpdate(i, {k: x[k].clone() for k in keys}, 1 + i, {"cluster": 0},
                            {"delta_c": {k: torch.zeros(x[k].shape) for k in keys}}) for i in range(3)]
    out = agg.aggregate(x, updates, 1)
    if name in ("flora", "flexlora"):
        torch.testing.assert_close(_effective(out), _effective(x) if name == "flora" else _effective(
            {k: v for k, v in x.items() if "merged" not in k}), rtol=1e-6, atol=1e-6)
        return
    for k in x:
        torch.testing.assert_close(out[k], x[k], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "scaffold", "local0"])
def test_identical_clients_give_their_adapter(name: str) -> None:
    """FedAvg-type servers: identical clients -> the new global is that adapter."""
    x = _global()
    y = {k: (t.float() + 1).to(t.dtype) for k, t in x.items()}
    updates = [ClientUpdate(i, y, n, {}, {"delta_c": {k: torch.zeros(t.shape) for k, t in x.items()}})
               for i, n in enumerate([1, 2, 3])]
    out = get_aggregator(name, num_clients=3).aggregate(x, updates, 0)
    for k in x:
        torch.testing.assert_close(out[k], y[k], rtol=1e-6, atol=0)


def test_fedavgm_without_momentum_is_fedavg() -> None:
    fedavgm = get_aggregator("fedavgm", server_momentum=0.0, server_lr=1.0)
    fedavg = get_aggregator("fedavg")
    x_m = x_a = _global()
    for r in range(3):
        x_m = fedavgm.aggregate(x_m, _random_round(x_m, r), r)
        x_a = fedavg.aggregate(x_a, _random_round(x_a, r), r)
        for k in x_a:
            torch.testing.assert_close(x_m[k].float(), x_a[k].float(), rtol=1e-6, atol=1e-6)


def _save(state: dict[str, Any], folder: Path) -> None:
    """What a generic saver can do with the documented state format: tensors -> safetensors, rest -> JSON."""
    tensors, plain = {}, {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensors[prefix] = value.contiguous()
        elif isinstance(value, dict):
            assert all(isinstance(k, str) and "/" not in k for k in value), "state keys must be '/'-free strings"
            for k, v in value.items():
                walk(f"{prefix}/{k}" if prefix else k, v)
        else:
            assert isinstance(value, (int, float, str)), f"{prefix}: {type(value).__name__} is not saveable"
            plain[prefix] = value

    walk("", state)
    save_file(tensors, str(folder / "state.safetensors"))
    (folder / "state.json").write_text(json.dumps(plain))


def _load(folder: Path) -> dict[str, Any]:
    state: dict[str, Any] = {}
    flat = {**load_file(str(folder / "state.safetensors")), **json.loads((folder / "state.json").read_text())}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = state
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return state


@pytest.mark.parametrize(("name", "variant"), ALGORITHMS)
def test_state_dict_round_trip_continues_identically(name: str, variant: str, tmp_path: Path) -> None:
    fresh_state = _make(name, variant).state_dict()  # before any round: must be saveable too
    _save(fresh_state, tmp_path)
    first = _make(name, variant)
    x = _global(first)
    x = first.aggregate(x, _random_round(x, 0, ids=(0, 1, 2), agg=first, server_round=1), 1)
    _save(first.state_dict(), tmp_path)
    resumed = _make(name, variant)
    resumed.load_state_dict(_load(tmp_path))
    for r in (2, 3):
        updates = _random_round(x, r, ids=(1, 3), agg=first, server_round=r)
        a, b = first.aggregate(x, updates, r), resumed.aggregate(x, updates, r)
        assert all(torch.equal(a[k], b[k]) for k in x)
        for cid in range(5):
            pa, pb = first.client_payload(cid), resumed.client_payload(cid)
            assert pa.keys() == pb.keys()
            assert all(torch.equal(pa[e][k], pb[e][k]) for e in pa for k in pa[e])
        x = a
    tmp2 = tmp_path / "again"
    tmp2.mkdir()
    _save(first.state_dict(), tmp2)
    _save(resumed.state_dict(), tmp_path)
    assert (tmp2 / "state.safetensors").read_bytes() == (tmp_path / "state.safetensors").read_bytes()
    assert (tmp2 / "state.json").read_text() == (tmp_path / "state.json").read_text()


def test_loaded_state_does_not_alias_caller_tensors() -> None:
    agg = get_aggregator("fedadam")
    x = _global()
    agg.aggregate(x, _random_round(x, 0), 0)
    state = agg.state_dict()
    other = get_aggregator("fedadam")
    other.load_state_dict(state)
    other.aggregate(x, _random_round(x, 1), 1)
    assert all(torch.equal(state["m"][k], agg.m[k]) for k in x)
    assert other.m["layer.lora_A.weight"].data_ptr() != agg.m["layer.lora_A.weight"].data_ptr()


# ----------------------------------------------------------------------------- registry and errors


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="fedavgx") as err:
        get_aggregator("fedavgx")
    for name in available_aggregators():
        assert name in str(err.value)


def test_fedadagrad_is_reachable() -> None:
    """OpenFedLLM's dispatch typo ("fedadgrad") made it unreachable; here the name builds and steps."""
    agg = get_aggregator("fedadagrad")
    assert type(agg).__name__ == "FedAdagrad"


@pytest.mark.parametrize("name", available_aggregators())
def test_accepts_every_cli_hyperparameter(name: str) -> None:
    """The round loop passes all FedArguments; flags an algorithm does not use are ignored, others refused."""
    get_aggregator(name, **dataclasses.asdict(FedArguments()))
    get_client_algorithm(name, **dataclasses.asdict(FedArguments()))
    with pytest.raises(TypeError, match="prox_muu: not a federated flag"):
        get_aggregator(name, num_clients=3, prox_muu=0.1)


@pytest.mark.parametrize(("name", "variant"), ALGORITHMS)
def test_constructor_parameters_are_flags_with_their_defaults(name: str, variant: str) -> None:
    """Keyword-only parameters named like the flags (or the run's --seed), defaults taken from FedArguments."""
    import inspect

    flags = {f.name: f.default for f in dataclasses.fields(FedArguments)} | {"seed": 0}
    cls = aggregator_class(name, variant)
    for built in (cls, cls.client_class):
        if built.__init__ is object.__init__:
            continue
        for param in list(inspect.signature(built.__init__).parameters.values())[1:]:
            assert param.kind is inspect.Parameter.KEYWORD_ONLY, (built, param.name)
            assert param.name in flags, (built, param.name)
            if param.default is not inspect.Parameter.empty and param.default is not None:
                assert param.default == flags[param.name], (built, param.name)


def test_registry_names_are_the_algorithm_modules() -> None:
    """Each --fed_alg is the module of its name, registering a paper class of that name; variants reuse names."""
    from federated_learning.aggregators import _registry

    aggregator_class("fedavg")  # imports every module
    registered = {key for key in _registry._REGISTRY}
    assert {name for name, variant in registered if variant == "paper"} == set(available_aggregators())
    assert {name for name, variant in registered if variant == "openfedllm"} == {
        "fedavgm", "fedadagrad", "fedyogi", "fedadam", "scaffold"}
    assert aggregator_class("fedprox", "openfedllm") is aggregator_class("fedprox")  # no variant: the paper's


@pytest.mark.parametrize(
    ("name", "hp", "flag"),
    [
        ("fedavgm", {"server_momentum": 1.0}, "--server_momentum"),
        ("fedavgm", {"fedopt_variant": "openfedllm", "fedopt_beta1": 1.5}, "--fedopt_beta1"),
        ("fedadam", {"fedopt_tau": 0.0}, "--fedopt_tau"),
        ("fedyogi", {"fedopt_beta2": -0.1}, "--fedopt_beta2"),
        ("fedadagrad", {"fedopt_variant": "flower"}, "--fedopt_variant"),
        ("scaffold", {"num_clients": None}, "--num_clients"),
        ("scaffold", {"num_clients": 2, "server_lr": 0.0}, "--server_lr"),
    ],
)
def test_bad_hyperparameters_name_the_flag(name: str, hp: dict[str, Any], flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        get_aggregator(name, **hp)


def test_bad_client_hyperparameter_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--prox_mu"):
        get_client_algorithm("fedprox", prox_mu=-1.0)


def test_scaffold_requires_delta_c() -> None:
    x = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="delta_c"):
        get_aggregator("scaffold", num_clients=2).aggregate(x, [ClientUpdate(0, {"w": torch.ones(2)}, 1)], 0)


def test_mismatched_client_adapter_is_rejected() -> None:
    x = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="client 7"):
        get_aggregator("fedadam").aggregate(x, [ClientUpdate(7, {"w": torch.ones(3)}, 1)], 0)


def test_stateless_aggregator_rejects_foreign_state() -> None:
    get_aggregator("fedavg").load_state_dict({})
    with pytest.raises(ValueError, match="no server state"):
        get_aggregator("fedprox").load_state_dict({"m": {}})
