"""Preference rows of any accepted shape -> ``prompt`` (a list of turns) / ``chosen`` / ``rejected``.

Accepted row shapes (detected per row, so local files may use any of them):

- plain text: ``prompt``, ``chosen``, ``rejected`` strings;
- hh-rlhf transcripts: ``chosen`` / ``rejected`` strings ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``
  and no ``prompt``: split at the last ``Assistant:`` marker the two transcripts share (OpenFedLLM's
  ``split_hh`` splits at the character-level common prefix instead, which cuts into both answers
  when they begin with the same words);
- conversations (ultrafeedback_binarized, TRL's conversational format): ``chosen`` / ``rejected``
  lists of ``{"role", "content"}`` messages ending with the assistant's answer; the prompt is the
  messages before it, else the ``prompt`` column (a string or a message list).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from utils.sft_data import KEPT_COLUMNS, text_value

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

_HH_MARKERS = re.compile(r"\n\n(Human|Assistant):[ ]?")
_HH_ASSISTANT = "\n\nAssistant:"
_HH_HUMAN = "\n\nHuman:"
LOCAL_SCHEMA = ("prompt + chosen + rejected (strings, or message lists), or chosen + rejected "
                "hh-rlhf transcripts / conversations")


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _merge_turns(roles_texts: Sequence[tuple[str, str]]) -> list[str] | None:
    """Turns alternating user, assistant, ..., user (consecutive same-role turns merged); None if malformed."""
    turns: list[str] = []
    last_role = None
    for role, text in roles_texts:
        if role == last_role:
            turns[-1] = f"{turns[-1]}\n\n{text}"
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            return None
        turns.append(text)
        last_role = role
    return turns if len(turns) % 2 == 1 else None


def split_transcripts(chosen: str, rejected: str) -> tuple[list[str], str, str] | None:
    """Split two hh-rlhf transcripts into the shared conversation turns and the two final answers."""
    shared = chosen[: _common_prefix_length(chosen, rejected)]
    cut = shared.rfind(_HH_ASSISTANT)
    if cut < 0:
        return None
    context = chosen[:cut] if chosen.startswith("\n\n") else "\n\n" + chosen[:cut]
    pieces = _HH_MARKERS.split(context)
    # split() with one group gives [text before the first marker, role, text, role, text, ...]
    if pieces[0].strip():
        return None
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = _merge_turns([(roles[pieces[i]], pieces[i + 1].strip()) for i in range(1, len(pieces), 2)])
    if turns is None:
        return None
    start = cut + len(_HH_ASSISTANT)
    answers = chosen[start:].strip(), rejected[start:].strip()
    if any(_HH_HUMAN in answer for answer in answers):  # the transcripts differ before their last turn
        return None
    return turns, *answers


def _message_turns(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of user/assistant messages; system messages are left to the template."""
    return [(str(m["role"]), text_value(m["content"]).strip()) for m in messages if m.get("role") != "system"]


def split_conversations(prompt: Any, chosen: Sequence[Mapping[str, Any]],
                        rejected: Sequence[Mapping[str, Any]]) -> tuple[list[str], str, str] | None:
    """Turn message lists (ultrafeedback / TRL conversational) into turns and the two final answers."""
    if not chosen or not rejected or chosen[-1].get("role") != "assistant" or rejected[-1].get("role") != "assistant":
        return None
    context = _message_turns(chosen[:-1])
    if context != _message_turns(rejected[:-1]):
        return None
    if not context:  # the answers alone: the prompt column holds the conversation
        if isinstance(prompt, str):
            context = [("user", prompt.strip())]
        elif isinstance(prompt, list):
            context = _message_turns(prompt)
    turns = _merge_turns(context)
    if turns is None:
        return None
    return turns, text_value(chosen[-1]["content"]).strip(), text_value(rejected[-1]["content"]).strip()


def to_pair(row: Mapping[str, Any]) -> tuple[list[str], str, str] | None:
    """One source row as (turns, chosen, rejected), whatever its shape; None when it cannot be used."""
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list):
        pair = split_conversations(prompt, chosen, rejected)
    elif isinstance(prompt, list):
        pair = split_conversations(prompt, [{"role": "assistant", "content": chosen}],
                                   [{"role": "assistant", "content": rejected}])
    elif not text_value(prompt).strip():  # no prompt: hh-rlhf transcripts carry it
        pair = split_transcripts(text_value(chosen), text_value(rejected))
    else:
        pair = ([text_value(prompt).strip()], text_value(chosen).strip(), text_value(rejected).strip())
    if pair is None:
        return None
    turns, good, bad = pair
    if not good or not bad or good == bad or not turns[-1]:
        return None
    return pair


def to_preference_rows(raw: datasets.Dataset, where: str) -> datasets.Dataset:
    """Map any accepted row shape to prompt (turns) / chosen / rejected (+ label / category)."""
    missing = [c for c in ("chosen", "rejected") if c not in raw.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (has: {', '.join(raw.column_names)}). "
                         f"Expected {LOCAL_SCHEMA}.")
    kept = [c for c in KEPT_COLUMNS if c in raw.column_names]

    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": [], **{c: [] for c in kept}}
        for i in range(len(batch["chosen"])):
            pair = to_pair({name: values[i] for name, values in batch.items()})
            if pair is None:
                continue
            for name, value in zip(("prompt", "chosen", "rejected"), pair, strict=True):
                out[name].append(value)
            for c in kept:
                out[c].append(batch[c][i])
        return out

    rows = raw.map(convert, batched=True, remove_columns=raw.column_names, desc="Splitting preference pairs")
    dropped = len(raw) - len(rows)
    if dropped:
        logger.warning("%s: dropped %d of %d rows that have no usable prompt / chosen / rejected split "
                       "(identical or empty answers, or no shared conversation)", where, dropped, len(raw))
    return rows
