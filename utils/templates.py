"""Prompt templates: one registry that SFT, DPO and evaluation all use.

A template turns an instruction into a *prompt* and a response into a *completion*; training puts
the loss on the completion tokens only. ``alpaca`` and ``vicuna`` reproduce OpenFedLLM's strings
exactly (its ``utils/template.py``: prompt = the template up to the response marker, completion =
" " + response + EOS). ``vicuna_v1.1`` is FastChat's conversation template that OpenFedLLM's DPO
uses (for a single user turn it yields the same text as ``vicuna``). ``chat`` defers to the
tokenizer's own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{} \n\n### Response:"
)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_PROMPT = VICUNA_SYSTEM + " USER: {} ASSISTANT:"


@dataclass(frozen=True)
class Template:
    """How one template renders prompts and completions."""

    name: str
    prompt_format: str | None  # None: the tokenizer's chat template

    def prompt(self, instruction: str, tokenizer: PreTrainedTokenizerBase) -> str:
        """The text the model sees before it answers ``instruction``."""
        if self.prompt_format is not None:
            return self.prompt_format.format(instruction)
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )

    def completion(self, instruction: str, response: str, tokenizer: PreTrainedTokenizerBase) -> str:
        """The text the model should produce for ``instruction``, end-of-turn marker included."""
        if self.prompt_format is not None:
            return " " + response + (tokenizer.eos_token or "")
        prompt = self.prompt(instruction, tokenizer)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}],
            tokenize=False,
        )
        if not full.startswith(prompt):
            raise ValueError(
                "--template chat: the tokenizer's chat template does not render the prompt as a prefix of the "
                "conversation; use --template alpaca or vicuna with this model"
            )
        return full[len(prompt):]


TEMPLATES: dict[str, Template] = {
    "alpaca": Template("alpaca", ALPACA_PROMPT),
    "vicuna": Template("vicuna", VICUNA_PROMPT),
    "vicuna_v1.1": Template("vicuna_v1.1", VICUNA_PROMPT),
    "chat": Template("chat", None),
}


def get_template(name: str) -> Template:
    """Look up ``--template``; unknown names fail with the valid choices."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"--template {name!r} is unknown. Valid: {', '.join(TEMPLATES)}") from None
