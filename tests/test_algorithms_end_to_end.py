"""Every federated algorithm through main_sft.main on the tiny model: 2 rounds, its state, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import main_sft

pytestmark = pytest.mark.slow


def _data(folder: Path) -> Path:
    """Invented instruction/response rows."""
    path = folder / "train.jsonl"
    if not path.exists():
        with open(path, "w") as f:
            for i in range(24):
                f.write(json.dumps({"instruction": f"Name the number after {i}.", "response": f"{i + 1}"}) + "\n")
    return path


def _run(tmp_path: Path, model_dir: Path, run_name: str, *extra: str) -> Path:
    argv = [
        "--model_name_or_path", str(model_dir), "--dataset_name", str(_data(tmp_path)),
        "--output_dir", str(tmp_path / "out"), "--run_name", run_name,
        "--num_clients", "3", "--sample_clients", "2", "--num_rounds", "2", "--max_steps", "2", "--batch_size", "2",
        "--seq_length", "48", "--torch_threads", "1", "--eval_samples", "2", "--learning_rate", "1e-2", *extra,
    ]
    return main_sft.main(argv)


# Which aggregator state each algorithm must checkpoint (prefixes of federated_state.safetensors keys).
STATE_KEYS = {
    "fedprox": [],
    "scaffold": ["aggregator/c/", "aggregator/c_i/"],
    "fedavgm": ["aggregator/v/"],
    "fedadagrad": ["aggregator/m/", "aggregator/v/"],
    "fedyogi": ["aggregator/m/", "aggregator/v/"],
    "fedadam": ["aggregator/m/", "aggregator/v/"],
}
CASES = [
    ("fedprox", ["--prox_mu", "0.1"]),
    ("scaffold", ["--optim", "sgd", "--learning_rate", "0.5"]),  # the exact (SGD) form
    ("scaffold", ["--fedopt_variant", "openfedllm"]),  # AdamW, correction after each step
    ("fedavgm", []),
    ("fedadagrad", ["--fedopt_eta", "1e-2"]),
    ("fedyogi", ["--fedopt_eta", "1e-2"]),
    ("fedadam", ["--fedopt_eta", "1e-2", "--fedopt_variant", "openfedllm"]),
]


@pytest.mark.parametrize(("fed_alg", "extra"), CASES, ids=[f"{a}-{'_'.join(e)}" for a, e in CASES])
def test_two_rounds_and_exact_resume(tmp_path: Path, tiny_model_dir: Path, fed_alg: str, extra: list[str]) -> None:
    flags = ["--fed_alg", fed_alg, "--save_model_freq", "1", *extra]
    full = _run(tmp_path, tiny_model_dir, "full", *flags)
    config = json.loads((full / "config.json").read_text())
    assert config["fed_alg"] == fed_alg

    first = load_file(full / "checkpoint-1" / "adapter_model.safetensors")
    second = load_file(full / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in second.values())
    assert any(not torch.equal(first[k], second[k]) for k in second)  # round 2 moved the adapter

    state = load_file(full / "checkpoint-1" / "federated_state.safetensors")
    for prefix in STATE_KEYS[fed_alg]:
        held = [t for k, t in state.items() if k.startswith(prefix)]
        assert held and any(t.abs().sum() > 0 for t in held), f"{prefix} missing or zero after round 1"
    if fed_alg == "scaffold":
        sampled = {k.split("/")[2] for k in state if k.startswith("aggregator/c_i/")}
        assert len(sampled) == 2  # c_i allocated only for the two clients sampled in round 1

    resumed = tmp_path / "out" / "resumed"
    resumed.mkdir(parents=True)
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    _run(tmp_path, tiny_model_dir, "resumed", *flags, "--resume_from_checkpoint", str(resumed / "checkpoint-1"))
    for name in ("adapter_model.safetensors", "federated_state.safetensors"):
        assert (full / "checkpoint-2" / name).read_bytes() == (resumed / "checkpoint-2" / name).read_bytes(), name


def test_fedprox_mu_zero_trains_exactly_like_fedavg(tmp_path: Path, tiny_model_dir: Path) -> None:
    fedavg = _run(tmp_path, tiny_model_dir, "fedavg", "--fed_alg", "fedavg")
    prox0 = _run(tmp_path, tiny_model_dir, "prox0", "--fed_alg", "fedprox", "--prox_mu", "0")
    prox1 = _run(tmp_path, tiny_model_dir, "prox1", "--fed_alg", "fedprox", "--prox_mu", "1")
    adapter = "checkpoint-2/adapter_model.safetensors"
    assert (fedavg / adapter).read_bytes() == (prox0 / adapter).read_bytes()
    assert np.array_equal(np.load(fedavg / "training_loss.npy"), np.load(prox0 / "training_loss.npy"))
    assert (fedavg / adapter).read_bytes() != (prox1 / adapter).read_bytes()  # the hook does act
