"""What every benchmark script shares: machine description, matmul peak, load, memory, timing.

Benchmarks print figures; they are not tests. On a shared machine absolute timings drift with the
load of other processes, so the scripts compare alternatives *interleaved in one process* and
print the load average next to every figure.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_average() -> str:
    """The 1-minute load average and the number of CPUs, e.g. '3.2/2'."""
    return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"


def cpu_name() -> str:
    """The CPU model name as /proc/cpuinfo reports it (or the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU feature flags (empty where /proc/cpuinfo is absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_line(threads: int) -> str:
    """One line naming the machine, the libraries and the thread count of this run."""
    flags = cpu_flags()
    accel = ",".join(f for f in ("amx_bf16", "avx512_bf16", "avx512f") if f in flags) or "no AMX/AVX512"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    import transformers
    import trl

    return (
        f"{cpu_name()} ({os.cpu_count()} CPUs, {accel}), {device}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}; {threads} thread(s)"
    )


def set_threads(threads: int) -> int:
    """Use ``threads`` intra-op threads (0: every CPU this process may use); return the count."""
    threads = threads if threads > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5, device: str = "cpu",
                  cpu_time: bool = False) -> float:
    """Best-of-``repeats`` GFLOP/s of a ``size``² @ ``size``² matmul in ``dtype`` (the machine's peak).

    ``cpu_time``: per CPU second of this process rather than per wall second (with one thread, the
    rate the cores deliver while other processes also run on them).
    """
    clock = time.process_time if cpu_time else time.perf_counter
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: oneDNN/AMX kernel selection
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = clock()
        torch.mm(a, b, out=out)
        sync(device)
        best = min(best, clock() - start)
    return 2 * size**3 / best / 1e9


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU), so wall-clock timings are honest."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (what benchmarks/README.md holds)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
