"""A tiny randomly initialised Llama model with a small BPE tokenizer, for tests and benchmarks.

Everything is built locally (no hub access): the tokenizer is trained on a small generated corpus,
the model is initialised from a fixed seed, and both are saved as an ordinary HF folder so that
``--model_name_or_path <folder>`` exercises the real loading path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from utils.templates import ALPACA_PROMPT, VICUNA_PROMPT

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def _corpus() -> list[str]:
    words = (
        "the a of to and in is that for it with as was on be by this are or from at which an have not "
        "positive negative neutral sentiment news company profit loss revenue shares rose fell stock "
        "question answer what how many apples has total left bought sold gave each more less "
        "0 1 2 3 4 5 6 7 8 9 10 11 12 + - * = #### helpful harmful response user assistant"
    ).split()
    lines = [ALPACA_PROMPT.format("x"), VICUNA_PROMPT.format("x")]
    for i in range(len(words)):
        lines.append(" ".join(words[i:] + words[:i]))
    return lines * 4


def build_tiny_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on a generated corpus (deterministic, ~50 ms)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(vocab_size: int, seed: int = 0, hidden_size: int = 32, num_layers: int = 2) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights from ``seed``."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """Build the tiny tokenizer and model and save both as an HF folder at ``path``."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
