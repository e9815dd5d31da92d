"""How a prompt and its completion share ``--seq_length``: the completion is kept whole, the prompt gives way.

Cutting ``prompt + completion`` from the right (what a plain truncation does) removes the response
first: with a long instruction, or a short ``--seq_length``, a row keeps no response token at all,
and training on such rows learns nothing (the loss is 0). Here the prompt is cut from the left
instead, keeping its end (the template's response marker, right before the answer) and a leading
BOS token; a row whose completion leaves no room for one prompt token (beside the BOS) is left out.
Training (SFT and DPO) and evaluation (held-out loss, preference log-probabilities) share this rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from utils.constants import PROMPT_CUT, SOURCE_ROW

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


@dataclass
class FitCounts:
    """How many rows a tokenisation left whole, cut the prompt of, or left out."""

    whole: int = 0
    prompt_cut: int = 0
    dropped: int = 0

    def describe(self, seq_length: int) -> str:
        """One log line, naming the flag to change."""
        return (f"{self.whole} rows fit --seq_length {seq_length} whole, {self.prompt_cut} had their prompt cut "
                f"from the left to keep the response, {self.dropped} were left out (their response leaves no room "
                "for a prompt token)")


def fit_prompt(
    prompt_ids: Sequence[int], completion_length: int, seq_length: int, bos_token_id: int | None
) -> list[int] | None:
    """``prompt_ids`` cut from the left so that a completion of ``completion_length`` tokens fits whole.

    A leading ``bos_token_id`` stays first. None when no prompt token would be left (the completion
    alone needs the whole ``seq_length``); then the row cannot be used.
    """
    room = seq_length - completion_length
    keep_bos = bool(prompt_ids) and bos_token_id is not None and prompt_ids[0] == bos_token_id
    if room < 1 + keep_bos:
        return None
    if len(prompt_ids) <= room:
        return list(prompt_ids)
    head = [prompt_ids[0]] if keep_bos else []
    return head + list(prompt_ids[len(prompt_ids) - (room - len(head)):])


def count_fit(counts: FitCounts, prompt_ids: Sequence[int], fitted: Sequence[int] | None) -> None:
    """Record in ``counts`` what ``fit_prompt`` did to one row."""
    if fitted is None:
        counts.dropped += 1
    elif len(fitted) < len(prompt_ids):
        counts.prompt_cut += 1
    else:
        counts.whole += 1


def drop_unused_bookkeeping(tokenized: Dataset, counts: FitCounts, seq_length: int) -> Dataset:
    """Remove the ``SOURCE_ROW`` / ``PROMPT_CUT`` columns when no row was left out / cut; log the counts.

    Raise a ValueError naming ``--seq_length`` when no row fits at all.
    """
    if counts.whole + counts.prompt_cut == 0:
        raise ValueError(f"none of the {counts.dropped} rows fits --seq_length {seq_length}: every response leaves "
                         "no room for a prompt token; raise --seq_length")
    unused = ([SOURCE_ROW] if counts.dropped == 0 else []) + ([PROMPT_CUT] if counts.prompt_cut == 0 else [])
    if counts.dropped or counts.prompt_cut:
        logger.warning("Tokenising: %s", counts.describe(seq_length))
    return tokenized.remove_columns(unused) if unused else tokenized
