"""The LoRA-aware algorithms through main_sft / main_dpo on the tiny model: 2 rounds, what they keep, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import main_dpo
from federated_learning.aggregators._registry import aggregator_class
from federated_learning.build import load_peft_model
from federated_learning.cli import parse_run
from federated_learning.export import main as export_main
from federated_learning.state import get_state, trainable_parameters
from tests.test_algorithms_end_to_end import _data, _run
from tests.test_dpo_end_to_end import LORA_AWARE, write_pairs
from tests.test_dpo_end_to_end import argv as dpo_argv

pytestmark = pytest.mark.slow

RANKS = ["--client_lora_ranks", "2,4,8"]  # --peft_lora_r 8 (the default)
CASES = [
    ("fedavg", RANKS), ("fedprox", [*RANKS, "--prox_mu", "0.5"]), ("ffa_lora", []), ("fedsa_lora", []),
    ("flora", RANKS), ("flexlora", RANKS),
    ("fedex_lora", []), ("rolora", []), ("hetlora", [*RANKS, "--hetlora_gamma", "0.5"]),
]
FILES = ("adapter_model.safetensors", "federated_state.safetensors", "federated_state.json", "merged_delta.safetensors")


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _initial(tmp_path: Path, model_dir: Path) -> dict[str, torch.Tensor]:
    cfg = parse_run("sft", ["--model_name_or_path", str(model_dir), "--dataset_name", str(_data(tmp_path))])
    model, _ = load_peft_model(cfg.script)  # the run's seeded initial LoRA
    return get_state(trainable_parameters(model))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], factor: str) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if factor in k)


def _check_uploads(run_dir: Path, fed_alg: str, adapter: dict[str, torch.Tensor], ranks: dict[int, int],
                   merged: int) -> None:
    """bytes_uploaded / bytes_downloaded of each client = its algorithm's sent keys / its start state at its rank
    (4 bytes per float32; HetLoRA's ranks change as clients prune, so it is left out)."""
    client = aggregator_class(fed_alg).client_class
    for record in _records(run_dir)[1:]:
        sent = client.sent_keys(record["round"] - 1, adapter)
        for cid, metrics in record["client_metrics"].items():
            rank = ranks.get(int(cid), 8)
            expected = sum(4 * (adapter[k].numel() // 8 * rank if "lora_" in k else adapter[k].numel()) for k in sent)
            assert metrics["bytes_uploaded"] == expected, (record["round"], cid)
            # down: the whole adapter at its rank, and M where the clients train on top of it (dense, out x in)
            down = sum(4 * t.numel() // 8 * rank for t in adapter.values()) + (merged if fed_alg in ("flora",
                                                                                                  "fedex_lora") else 0)
            assert metrics["bytes_downloaded"] == down, (record["round"], cid)


@pytest.mark.parametrize(("fed_alg", "extra"), CASES, ids=[a + ("-ranks" if RANKS[0] in e else "") for a, e in CASES])
def test_two_sft_rounds_what_is_kept_and_exact_resume(
    tmp_path: Path, tiny_model_dir: Path, fed_alg: str, extra: list[str]
) -> None:
    flags = ["--fed_alg", fed_alg, "--save_model_freq", "1", *extra]
    full = _run(tmp_path, tiny_model_dir, "full", *flags)
    first = load_file(full / "checkpoint-1" / "adapter_model.safetensors")
    second = load_file(full / "checkpoint-2" / "adapter_model.safetensors")
    initial = _initial(tmp_path, tiny_model_dir)
    merged = full / "checkpoint-2" / "merged_delta.safetensors"
    assert merged.exists() == aggregator_class(fed_alg).merges_into_base
    ranks = {0: 2, 1: 4, 2: 8} if RANKS[0] in extra else {}
    if fed_alg != "hetlora":
        merged_bytes = sum(4 * t.numel() for t in load_file(merged).values()) if merged.exists() else 0
        _check_uploads(full, fed_alg, second, ranks, merged_bytes)
    if fed_alg == "ffa_lora":  # A never changes; B does
        assert _same(first, initial, "lora_A") and _same(second, initial, "lora_A")
        assert not _same(second, first, "lora_B")
    if fed_alg == "rolora":  # round 1 trains B only, round 2 A only
        assert _same(first, initial, "lora_A") and not _same(first, initial, "lora_B")
        assert _same(second, first, "lora_B") and not _same(second, first, "lora_A")
    if fed_alg == "fedsa_lora":  # the global B is never written: each client's lives in the server state
        assert _same(first, initial, "lora_B") and _same(second, initial, "lora_B")
        state1 = load_file(full / "checkpoint-1" / "federated_state.safetensors")
        state2 = load_file(full / "checkpoint-2" / "federated_state.safetensors")
        round1, round2 = (set(r["clients"]) for r in _records(full)[1:])
        for cid in round1 - round2:  # a client that sat out round 2 still has exactly its round-1 B
            own = {k: v for k, v in state1.items() if k.startswith(f"personal/states/{cid}/")}
            assert own and all(torch.equal(state2[k], v) for k, v in own.items())
        kept = {k.split("/")[2] for k in state2 if k.startswith("personal/states/")}
        assert kept == {str(c) for c in round1 | round2}
        b_of = {c: next(v for k, v in state2.items() if k.startswith(f"personal/states/{c}/")) for c in kept}
        assert len({tuple(v.flatten().tolist()[:8]) for v in b_of.values()}) == len(kept)  # never averaged
    if fed_alg in ("flora", "flexlora"):  # the global LoRA adds nothing; the change lives in M
        assert not any(v.any() for k, v in second.items() if "lora_B" in k)
        assert any(v.any() for v in load_file(merged).values())
    if fed_alg == "hetlora":
        rounds = _records(full)[1:]
        assert all("lora_rank" in m for r in rounds for m in r["client_metrics"].values())

    resumed = tmp_path / "out" / "resumed"
    resumed.mkdir(parents=True)
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    _run(tmp_path, tiny_model_dir, "resumed", *flags, "--resume_from_checkpoint", str(resumed / "checkpoint-1"))
    for name in FILES:
        want = full / "checkpoint-2" / name
        if want.exists():
            assert want.read_bytes() == (resumed / "checkpoint-2" / name).read_bytes(), name


@pytest.mark.parametrize("fed_alg", LORA_AWARE)
def test_two_dpo_rounds_and_exact_resume(tmp_path: Path, tiny_model_dir: Path, fed_alg: str) -> None:
    data = write_pairs(tmp_path / "data")
    ranks = RANKS if aggregator_class(fed_alg).supports_client_ranks else []
    flags = ["--fed_alg", fed_alg, "--save_model_freq", "1", *ranks]
    full = main_dpo.main(dpo_argv(tmp_path, tiny_model_dir, data, *flags, "--run_name", "full"))
    records = _records(full)
    assert records[-1]["eval_reward_margin"] != 0.0  # the policy moved away from the reference
    resumed = tmp_path / "out" / "resumed"
    resumed.mkdir(parents=True)
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    main_dpo.main(dpo_argv(tmp_path, tiny_model_dir, data, *flags, "--run_name", "resumed",
                           "--resume_from_checkpoint", str(resumed / "checkpoint-1")))
    for name in FILES:
        want = full / "checkpoint-2" / name
        if want.exists():
            assert want.read_bytes() == (resumed / "checkpoint-2" / name).read_bytes(), name


def test_export_writes_models_that_load_alone(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A FedEx-LoRA checkpoint exports as a full model equal to the run's; a FedSA-LoRA one as PEFT adapters."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from evaluation.cli import EvalArguments, validate
    from federated_learning.merged_delta import load_merged_deltas

    fedex = _run(tmp_path, tiny_model_dir, "fedex", "--fed_alg", "fedex_lora") / "checkpoint-2"
    with pytest.raises(ValueError, match="merged_delta.safetensors.*federated_learning.export"):
        validate(EvalArguments(adapter=[str(fedex)]), [])
    folder = export_main(["--checkpoint", str(fedex), "--output", str(tmp_path / "fedex_model")])
    exported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    run_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                          fedex).eval()
    assert load_merged_deltas(run_model, fedex)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, run_model(ids).logits, rtol=1e-4, atol=1e-4)

    fedsa = _run(tmp_path, tiny_model_dir, "fedsa", "--fed_alg", "fedsa_lora") / "checkpoint-2"
    with pytest.raises(ValueError, match="clients' own"):
        validate(EvalArguments(adapter=[str(fedsa)]), [])
    with pytest.raises(SystemExit, match="--personal mean"):
        export_main(["--checkpoint", str(fedsa), "--output", str(tmp_path / "x")])
    state = load_file(fedsa / "federated_state.safetensors")
    client = sorted({k.split("/")[2] for k in state if k.startswith("personal/states/")})[0]
    own = export_main(["--checkpoint", str(fedsa), "--output", str(tmp_path / "own"), "--personal", client])
    mean = export_main(["--checkpoint", str(fedsa), "--output", str(tmp_path / "mean"), "--personal", "mean"])
    own_b = {k.split("/", 3)[3]: v for k, v in state.items() if k.startswith(f"personal/states/{client}/")}
    written = load_file(own / "adapter_model.safetensors")
    assert own_b and all(torch.equal(written[k], v) for k, v in own_b.items())
    assert not all(torch.equal(load_file(mean / "adapter_model.safetensors")[k], v) for k, v in own_b.items())
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), own)  # loads as is


def test_hetlora_clients_prune_their_rank_and_send_less(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With a strong penalty, clients give up components round after round; the server keeps their ranks."""
    run_dir = _run(tmp_path, tiny_model_dir, "het", "--fed_alg", "hetlora", "--client_lora_ranks", "2,4,8",
                   "--hetlora_gamma", "0.5", "--hetlora_lambda", "5", "--num_rounds", "4", "--sample_clients", "3")
    rounds = _records(run_dir)[1:]
    reported = [{int(c): m["lora_rank"] for c, m in r["client_metrics"].items()} for r in rounds]
    assert reported[0] == {0: 2, 1: 4, 2: 8}  # round 1 starts with B = 0: the tail cannot shrink yet
    assert all(reported[i + 1][c] <= reported[i][c] for i in range(3) for c in range(3))
    assert sum(reported[-1].values()) < sum(reported[0].values())
    uploads = [sum(m["bytes_uploaded"] for m in r["client_metrics"].values()) for r in rounds]
    assert uploads[-1] < uploads[0]
    saved = json.loads((run_dir / "checkpoint-4" / "federated_state.json").read_text())
    assert {c: saved[f"aggregator/ranks/{c}"] for c in range(3)} == reported[-1]  # every client trained last round
