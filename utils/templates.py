"""Prompt templates: one registry that SFT, DPO and evaluation all use.

A template turns an instruction into a *prompt* and a response into a *completion*; training puts
the loss on the completion tokens only. ``alpaca`` and ``vicuna`` reproduce OpenFedLLM's strings
exactly (its ``utils/template.py``: prompt = the template up to the response marker, completion =
" " + response + EOS). ``vicuna_v1.1`` is FastChat's conversation template that OpenFedLLM's DPO
uses (for a single user turn it yields the same text as ``vicuna``). ``chat`` defers to the
tokenizer's own chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
# A later user turn of a multi-turn prompt, after an earlier answer and its end-of-turn marker
# (FastChat's vicuna_v1.1 layout, which OpenFedLLM's DPO renders hh-rlhf with).
ALPACA_TURN = "\n\n### Instruction:\n{} \n\n### Response:"
VICUNA_TURN = "USER: {} ASSISTANT:"


@dataclass(frozen=True)
class Template:
    """How one template renders prompts and completions."""

    name: str
    prompt_format: str | None  # None: the tokenizer's chat template
    turn_format: str | None = None  # a later user turn of a multi-turn prompt (formatted templates)

    def prompt(self, instruction: str, tokenizer: PreTrainedTokenizerBase) -> str:
        """The text the model sees before it answers ``instruction``."""
        if self.prompt_format is not None:
            return self.prompt_format.format(instruction)
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )

    def sft_prompt(self, instruction: str, history: Sequence[str] | None, tokenizer: PreTrainedTokenizerBase) -> str:
        """``prompt``, or with ``history`` (earlier turns: user, assistant, ...) the conversation up to it."""
        if history:
            return self.conversation_prompt([*history, instruction], tokenizer)
        return self.prompt(instruction, tokenizer)

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

    def conversation_prompt(self, turns: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> str:
        """The prompt of a conversation ``turns`` = user, assistant, ..., user; one turn gives ``prompt``.

        Each earlier answer is rendered as a completion (end-of-turn marker included), each later
        user turn with ``turn_format``: for vicuna_v1.1 this is FastChat's multi-turn layout.
        """
        if len(turns) % 2 == 0:
            raise ValueError(f"a conversation prompt must end with a user turn; got {len(turns)} turns")
        if self.prompt_format is None:
            roles = ("user", "assistant")
            messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if len(turns) > 1 and self.turn_format is None:
            raise ValueError(f"--template {self.name} renders single-turn prompts only")
        text = self.prompt(turns[0], tokenizer)
        for i in range(1, len(turns), 2):
            text += self.completion(turns[i - 1], turns[i], tokenizer) + str(self.turn_format).format(turns[i + 1])
        return text


TEMPLATES: dict[str, Template] = {
    "alpaca": Template("alpaca", ALPACA_PROMPT, ALPACA_TURN),
    "vicuna": Template("vicuna", VICUNA_PROMPT, VICUNA_TURN),
    "vicuna_v1.1": Template("vicuna_v1.1", VICUNA_PROMPT, VICUNA_TURN),
    "chat": Template("chat", None),
}


def get_template(name: str) -> Template:
    """Look up ``--template``; unknown names fail with the valid choices."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"--template {name!r} is unknown. Valid: {', '.join(TEMPLATES)}") from None
