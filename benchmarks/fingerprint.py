"""Fingerprints of fixed tiny-model runs, to show that a change leaves training and evaluation byte-identical.

Each run is ``main_sft.py`` / ``main_dpo.py`` on the tiny random model (utils/tiny_model.py) with the
bundled data, 3 rounds, evaluation at rounds 0, 2 and 3; its fingerprint is the SHA-256 of the
final adapter, of the server state (``federated_state.safetensors``) and of metrics.jsonl with every
``*seconds`` field removed. Save the fingerprints before a change and compare after it:

    .venv/bin/python benchmarks/fingerprint.py --save before.json       # on the old revision
    .venv/bin/python benchmarks/fingerprint.py --compare before.json    # on the new one: exit 1 if any differs

Floating-point kernels differ between CPUs, so compare fingerprints taken on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SFT, DPO = "main_sft.py", "main_dpo.py"
RUNS: dict[str, list[str]] = {
    "sft_default": [SFT],
    "sft_dirichlet_arithmetic": [SFT, "--split_strategy", "dirichlet", "--dataset_name", "bundled/arithmetic",
                                 "--partition_column", "category"],
    "sft_scaffold": [SFT, "--fed_alg", "scaffold", "--server_lr", "0.5"],
    "sft_scaffold_openfedllm": [SFT, "--fed_alg", "scaffold", "--fedopt_variant", "openfedllm", "--optim", "sgd"],
    "sft_fedprox": [SFT, "--fed_alg", "fedprox", "--prox_mu", "0.5"],
    "sft_fedavgm": [SFT, "--fed_alg", "fedavgm", "--server_lr", "0.7"],
    "sft_fedavgm_openfedllm": [SFT, "--fed_alg", "fedavgm", "--fedopt_variant", "openfedllm"],
    "sft_fedadagrad": [SFT, "--fed_alg", "fedadagrad"],
    "sft_fedyogi_openfedllm": [SFT, "--fed_alg", "fedyogi", "--fedopt_variant", "openfedllm"],
    "sft_local1": [SFT, "--fed_alg", "local1"],
    "dpo_default": [DPO],
    "dpo_fedadam_openfedllm": [DPO, "--fed_alg", "fedadam", "--fedopt_variant", "openfedllm"],
}
REF_RUN = "dpo_ref_adapter"  # DPO from --ref_adapter = the final adapter of sft_fedavgm


def _strip_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if not k.endswith("seconds")}
    return value


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(run_dir: Path) -> dict[str, str]:
    """Hashes of a finished run's final adapter, server state and time-free metrics."""
    last = max(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    metrics = "\n".join(json.dumps(_strip_times(json.loads(line)))
                        for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return {"adapter": _sha((last / "adapter_model.safetensors").read_bytes()),
            "server_state": _sha((last / "federated_state.safetensors").read_bytes()),
            "metrics": _sha(metrics.encode())}


def run_all(work: Path) -> dict[str, dict[str, str]]:
    """Train every run in a child process; return the fingerprints."""
    sys.path.insert(0, str(ROOT))
    from utils.tiny_model import save_tiny_model

    model = save_tiny_model(work / "tiny")
    common = ["--model_name_or_path", str(model), "--torch_threads", "1", "--output_dir", str(work / "runs"),
              "--num_rounds", "3", "--eval_samples", "12", "--eval_every", "2"]
    runs = {**RUNS, REF_RUN: [DPO, "--ref_adapter", str(work / "runs" / "sft_fedavgm" / "checkpoint-3")]}
    result = {}
    for name, (script, *flags) in runs.items():
        subprocess.run([sys.executable, str(ROOT / script), *flags, *common, "--run_name", name], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result[name] = fingerprint(work / "runs" / name)
        print(name, result[name], flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Print the fingerprints; save them, or compare them with saved ones (exit 1 on a difference)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, help="write the fingerprints to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare with fingerprints saved by --save")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        found = run_all(Path(tmp))
    if args.save is not None:
        args.save.write_text(json.dumps(found, indent=1) + "\n")
    if args.compare is not None:
        saved = json.loads(args.compare.read_text())
        differ = sorted(name for name in saved if found.get(name) != saved[name])
        print("identical" if not differ else f"DIFFERENT: {', '.join(differ)}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
