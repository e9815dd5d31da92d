"""Pull the answer out of generated text: a sentiment label or a GSM8K-style final number."""

from __future__ import annotations

import re

SENTIMENT_LABELS = ("negative", "neutral", "positive")

_LABEL_PATTERN = re.compile(r"\b(" + "|".join(SENTIMENT_LABELS) + r")\b", re.IGNORECASE)
# A number: optional minus (not one joining two words or numbers, as in "3-4"), thousands groups
# of exactly three digits ("1,000" but not the list "1,2"), then an optional decimal part.
_NUMBER_PATTERN = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<=\w)(?:\d+)(?:\.\d+)?")
_FINAL_MARKER = "####"


def extract_sentiment(text: str) -> str | None:
    """The first sentiment label word in ``text`` (case-insensitive, whole words), lower-cased; None if none."""
    match = _LABEL_PATTERN.search(text)
    return match.group(1).lower() if match else None


def normalise_number(number: str) -> str:
    """Canonical spelling of a number: no thousands commas, no trailing decimal zeros, no leading zeros.

    ``"1,000"`` -> ``"1000"``, ``"3.0"`` -> ``"3"``, ``"2.50"`` -> ``"2.5"``, ``"-0"`` -> ``"0"``.
    """
    text = number.replace(",", "")
    negative = text.startswith("-")
    text = text.lstrip("-")
    whole, _, fraction = text.partition(".")
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    text = f"{whole}.{fraction}" if fraction else whole
    return f"-{text}" if negative and text != "0" else text


def extract_final_number(text: str) -> str | None:
    """The number after the last ``####`` (GSM8K's answer marker), else the last number in ``text``.

    The result is normalised with ``normalise_number``; None when ``text`` holds no number.
    """
    marker = text.rfind(_FINAL_MARKER)
    if marker >= 0:
        after = _NUMBER_PATTERN.search(text, marker + len(_FINAL_MARKER))
        if after:
            return normalise_number(after.group(0))
    numbers = _NUMBER_PATTERN.findall(text)
    return normalise_number(numbers[-1]) if numbers else None
