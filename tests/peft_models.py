"""A tiny PEFT model whose LoRA B is non-zero, shared by tests that compare gradients."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from utils.model import add_lora_adapter


def peft_model_with_active_lora(path: Path) -> torch.nn.Module:
    """Tiny model + r4 LoRA on q,v, with LoRA B drawn at random so adapter gradients flow everywhere."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft = add_lora_adapter(model, r=4, alpha=8, dropout=0.0, modules="q_proj,v_proj")
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return peft
