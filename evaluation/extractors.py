"""Answer extractors for the registry's benchmarks: from a free-form completion to a comparable answer.

The bundled tasks' extractors (``extract_sentiment``, ``extract_final_number``) live in
``evaluation/answers.py``; these cover the public benchmarks' answer formats.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from evaluation.answers import extract_final_number


def fingpt_sentiment(text: str) -> str:
    """FinGPT's benchmark rule: "positive" if "positive" or "Positive" occurs, else "negative" likewise, else "neutral".

    Kept exactly as FinGPT scores it (an answer naming neither counts as neutral; "POSITIVE" does not
    count) so that numbers are comparable with FinGPT's finance results.
    """
    if "positive" in text or "Positive" in text:
        return "positive"
    if "negative" in text or "Negative" in text:
        return "negative"
    return "neutral"


def _plain(text: str) -> str:
    """``text`` without markdown emphasis and quotes around words, with full-width colons made plain."""
    text = text.replace("\uff1a", ":").replace("**", "").replace("__", "")
    return re.sub(r"[`\"'\u201c\u201d\u2018\u2019](\w+)[`\"'\u201c\u201d\u2018\u2019]", r"\1", text)


def choice_letter(text: str, options: Sequence[str]) -> str | None:
    """The option letter (A, B, ...) a completion picks, or None when it picks none or is ambiguous.

    Markdown emphasis and quotes are ignored ("**Answer:** `C`" is "Answer: C"). A capital letter
    counts only as an option marker, tried in this order, the first kind found deciding: an answer
    statement ("The answer is (C)", "Answer: B", "answer is option D", "The correct option is C",
    "Option C is correct", "C is the correct answer"; when the words after "answer is" are an
    option's own text, that option); a marker "B." / "B)" / "B:" opening the completion or a line,
    or "(B)" / "B)" anywhere; the completion being a lone letter; else the text of exactly one
    option, quoted in the completion. If the deciding kind names two different letters ("A. ...
    B. ..."), the answer is ambiguous: None. "A" followed by a lowercase word is the article, not a
    marker: "A patient ...", "The answer is A combination of ...", "The answer is a beta blocker"
    name no option by letter; lowercase letters never count ("answer: a" could be the article).
    """
    letters = "ABCDEFGHIJ"[: len(options)]
    plain = _plain(text).strip()
    lowered = plain.lower()
    statement = r"(?i:answer)\s*(?:(?i:is)\s*)?[:\-]?\s*(?:(?i:option)\s*)?"
    found = re.search(statement, plain)
    if found:
        rest = lowered[found.end():]
        named = [letters[i] for i, option in sorted(enumerate(options), key=lambda o: -len(o[1]))
                 if option.strip() and rest.startswith(option.strip().lower())]
        if named:
            return named[0]
    # A letter followed by a lowercase word: "A" is then the article ("A beta ..."); "B because" counts.
    letter = rf"\(?([{letters}])\)?(?![\w'])(?!(?<=A)\s+[a-z])"
    kinds = (
        re.findall(statement + letter, plain)
        + re.findall(rf"(?i:the correct (?:option|answer|choice) is)\s*{letter}", plain)
        + re.findall(rf"(?:(?i:option)\s+|^\s*){letter}\s+(?i:is (?:the )?correct)", plain),
        re.findall(rf"(?m)^\s*\(?([{letters}])[.):](?=\s|$)", plain) + re.findall(rf"\b([{letters}])\)", plain),
        re.findall(rf"^\(?([{letters}])\)?\.?$", plain),
    )
    for letters_found in kinds:
        if letters_found:
            return letters_found[0] if len(set(letters_found)) == 1 else None
    quoted = [letters[i] for i, option in enumerate(options)
              if option.strip() and re.search(rf"(?<!\w){re.escape(option.strip().lower())}(?!\w)", lowered)]
    return quoted[0] if len(quoted) == 1 else None


def yes_no_maybe(text: str) -> str | None:
    """The yes / no / maybe a completion gives, or None when it gives none or is ambiguous.

    An answer statement ("the answer is maybe", "Answer: no") decides; else a reply opening with
    one of the three words; else the one of the three it mentions, if it mentions only one.
    "There is no clear evidence; the answer is maybe" is maybe; "not yes but no" is ambiguous.
    """
    lowered = _plain(text).lower()
    stated = re.findall(r"answer\s*(?:is)?\s*[:\-]?\s*(yes|no|maybe)\b", lowered)
    if stated:
        return stated[0] if len(set(stated)) == 1 else None
    opening = re.match(r"\s*(yes|no|maybe)\b", lowered)
    if opening:
        return opening.group(1)
    mentioned = set(re.findall(r"\b(yes|no|maybe)\b", lowered))
    return mentioned.pop() if len(mentioned) == 1 else None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start == -1:
        return None
    brace = text.find("{", start)
    if brace == -1:
        # "\boxed 5": the answer runs to the next space or dollar sign.
        tail = text[start + len("\\boxed"):].strip()
        return re.split(r"[\s$]", tail)[0] or None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return None


def math_answer(text: str) -> str | None:
    """A MATH answer: the last boxed expression, else what follows "answer is", else the last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    match = re.search(r"answer is[:\s]*\$?([^$\n]+?)\$?\s*\.?\s*$", text.strip(), flags=re.IGNORECASE)
    if match:
        return match.group(1).strip()
    return extract_final_number(text)


_LATEX_NOISE = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "$", "^\\circ", "^{\\circ}", "\\%", "%")


def normalize_math(answer: str | None) -> str | None:
    """Canonical text of a MATH answer so that equivalent notations compare equal.

    Removes spacing/sizing commands, units in ``\\text{}``, dollar signs and degree/percent marks;
    unifies ``\\dfrac``/``\\tfrac`` to ``\\frac``, ``\\frac12`` to ``\\frac{1}{2}``, "0.5" to ".5"
    and drops a leading "x =".
    """
    if answer is None:
        return None
    text = answer.strip()
    text = re.sub(r"\\text\{\s*[a-zA-Z ]*\}$", "", text)  # trailing units
    text = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", text)
    for noise in _LATEX_NOISE:
        text = text.replace(noise, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", text)
    text = re.sub(r"^[a-zA-Z]\s*=", "", text)
    text = text.replace(" ", "").rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    text = re.sub(r"^(-?)0\.", r"\1.", text)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    return text


def code_block(text: str) -> str:
    """The first fenced code block of a completion (```python ... ```), else the completion itself."""
    match = re.search(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", text, flags=re.DOTALL)
    return match.group(1) if match else text
