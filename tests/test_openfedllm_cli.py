"""OpenFedLLM's README command line runs unchanged (fewer rounds) against local model and data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import main_sft


def write_alpaca_gpt4_mirror(root: Path, n: int = 60) -> Path:
    """A local mirror of vicgalle/alpaca-gpt4 in its real schema (instruction/input/output/text)."""
    folder = root / "vicgalle" / "alpaca-gpt4"
    folder.mkdir(parents=True)
    rows = [
        {"instruction": f"Give a word that rhymes with item {i}.", "input": "" if i % 2 else f"item {i}",
         "output": f"Rhyme {i}.", "text": f"formatted text {i}"}
        for i in range(n)
    ]
    (folder / "train.json").write_text(json.dumps(rows))
    return root


def test_openfedllm_readme_command(tmp_path: Path, tiny_model_dir: Path) -> None:
    data_root = write_alpaca_gpt4_mirror(tmp_path / "data")
    argv = [
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", "vicgalle/alpaca-gpt4",
        "--local_data_dir", f"{data_root}/",
        "--dataset_sample", "20000",
        "--fed_alg", "fedavg",
        "--num_clients", "20",
        "--sample_clients", "2",
        "--max_steps", "10",
        "--num_rounds", "1",
        "--batch_size", "16",
        "--gradient_accumulation_steps", "1",
        "--seq_length", "512",
        "--peft_lora_r", "32",
        "--peft_lora_alpha", "64",
        "--use_peft",
        "--load_in_8bit",
        "--output_dir", str(tmp_path / "output"),
        "--template", "alpaca",
        "--torch_threads", "1",
    ]
    run_dir = main_sft.main(argv)
    assert run_dir.name.startswith("alpaca-gpt4_20000_fedavg_c20s2_i10_b16a1_l512_r32a64_")
    loss = np.load(run_dir / "training_loss.npy")
    assert loss.shape == (20, 1) and (loss > 0).sum() == 2
    assert (run_dir / "checkpoint-1" / "adapter_model.safetensors").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["load_in_8bit"] is True and config["peft_lora_r"] == 32
