"""An LLM judge behind any OpenAI-compatible ``/chat/completions`` endpoint, for open-ended benchmarks.

Plain ``urllib`` keeps it dependency-free: a hosted API, vLLM, llama.cpp's server or Ollama all
work (``--judge_base_url http://127.0.0.1:8000/v1``). The API key is read from the environment
variable named by ``--judge_api_key_env`` (none is sent when it is unset, as local servers expect).
Single-answer grading on a 1-10 scale, as in MT-Bench; the prompts below are this project's own.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

logger = logging.getLogger(__name__)

JUDGE_SYSTEM = "You are an impartial expert judge of the quality of AI assistant answers."
RATING_INSTRUCTIONS = (
    "Judge the answer for helpfulness, relevance, correctness, depth and level of detail; be strict and "
    "ignore its length as such. First explain your judgement in a few sentences, then give the rating on "
    "its own line in exactly this form: [[N]], where N is an integer from 1 (useless) to 10 (excellent)."
)
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_LOOSE_RATING = re.compile(r"[Rr]ating\s*[:=]\s*\[?\s*(\d+(?:\.\d+)?)")


def single_turn_prompt(question: str, answer: str, reference: str | None = None) -> str:
    """The judge's user message for one question and answer (with a reference answer for math/code)."""
    ref = f"\n[Reference answer, for checking correctness]\n{reference}\n" if reference else ""
    return (f"{RATING_INSTRUCTIONS}\n\n[User question]\n{question}\n{ref}\n"
            f"[Assistant answer]\n{answer}\n[End of answer]")


def second_turn_prompt(turns: list[str], answers: list[str], reference: str | None = None) -> str:
    """The judge's user message for the second turn of a two-turn conversation."""
    ref = f"\n[Reference answer to the second question, for checking correctness]\n{reference}\n" if reference else ""
    return (f"{RATING_INSTRUCTIONS} Rate only the assistant's answer to the SECOND user message.\n\n"
            f"[User, first message]\n{turns[0]}\n\n[Assistant, first answer]\n{answers[0]}\n\n"
            f"[User, second message]\n{turns[1]}\n{ref}\n[Assistant, second answer]\n{answers[1]}\n[End of answer]")


def parse_rating(verdict: str) -> float | None:
    """The 1-10 rating in a verdict (the last ``[[N]]``, else "Rating: N"); None when absent or out of range."""
    found = _RATING.findall(verdict) or _LOOSE_RATING.findall(verdict)
    if not found:
        return None
    value = float(found[-1])
    return value if 1.0 <= value <= 10.0 else None


@dataclass
class JudgeClient:
    """Chat-completion calls to an OpenAI-compatible server, deterministic (temperature 0)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    max_retries: int = 3
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"--judge_base_url {self.base_url!r} must start with http:// or https://")
        if not self.model:
            raise ValueError("--judge_model is empty; name the model the judge endpoint serves")

    def complete(self, user: str, system: str = JUDGE_SYSTEM) -> str:
        """The judge's reply to one message; retries transient failures (connection, 429, 5xx)."""
        body = json.dumps({
            "model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as err:
                if err.code not in (408, 429) and err.code < 500 or attempt == self.max_retries:
                    detail = err.read().decode("utf-8", "replace")[:300]
                    raise RuntimeError(f"judge endpoint {url} answered HTTP {err.code}: {detail}") from err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.max_retries:
                    raise RuntimeError(f"judge endpoint {url} unreachable ({err}); check --judge_base_url") from err
            logger.warning("judge call failed (attempt %d), retrying", attempt + 1)
            time.sleep(min(2.0 ** attempt, 30.0))
        raise AssertionError("unreachable")
