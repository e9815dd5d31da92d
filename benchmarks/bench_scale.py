"""Peak memory and per-round overhead as the number of clients grows (10, 100, 1,000).

Each (algorithm, number of clients) runs ``main_sft.py``'s run (``federated_learning.run``) in a
fresh child process on the tiny random model (utils/tiny_model.py) and a generated local dataset of a fixed size (so
the rows in memory are the same for every number of clients: only how they are split changes),
2 clients sampled per round, a few local steps. The child reports its peak RSS, its RSS after
setup (data split and tokenised, model and trainer built) and at the end, the per-round overhead
(round wall time minus the clients' ``Trainer.train()`` time, from metrics.jsonl) and the state the
algorithm truly needs per client (SCAFFOLD: one control variate c_i per client ever sampled;
FedAvg: none). The growth of RSS from the smallest number of clients is set against that state.

    .venv/bin/python benchmarks/bench_scale.py
    .venv/bin/python benchmarks/bench_scale.py --clients 10 100 1000 10000 --num_rounds 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_line, markdown_table, peak_rss_mb, set_threads  # noqa: E402

PAGE_MIB = 4096 / 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (the parent passes them on to its children)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--algorithms", nargs="+", default=["fedavg", "scaffold"])
    parser.add_argument("--num_rows", type=int, default=5000, help="rows of the generated dataset (all runs)")
    parser.add_argument("--num_rounds", type=int, default=20)
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    # Set by the parent for a child run.
    parser.add_argument("--child", nargs=4, metavar=("ALG", "CLIENTS", "DATA", "MODEL"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_MIB


def write_dataset(path: Path, num_rows: int) -> None:
    """Invented instruction/response rows (arithmetic questions) as jsonl."""
    with open(path, "w") as f:
        for i in range(num_rows):
            a, b = i % 97, (7 * i) % 89
            f.write(json.dumps({"instruction": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}"}) + "\n")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One federated run; returns memory, timing and per-client-state figures."""
    from federated_learning.cli import parse_run
    from federated_learning.run import execute, prepare
    from federated_learning.state import num_bytes

    fed_alg, clients, data, model = args.child
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_run("sft", [
            "--model_name_or_path", model, "--dataset_name", data, "--dataset_sample", str(args.num_rows),
            "--fed_alg", fed_alg, "--num_clients", clients, "--sample_clients", "2",
            "--num_rounds", str(args.num_rounds), "--max_steps", str(args.max_steps),
            "--batch_size", str(args.batch_size), "--seq_length", "64", "--torch_threads", str(args.threads),
            "--output_dir", tmp, "--run_name", "run", "--eval_samples", "0",
        ])
        start = time.perf_counter()
        prepared = prepare(cfg)
        rss_setup, setup_seconds = rss_mib(), time.perf_counter() - start
        run_dir = execute(prepared)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loop = prepared.loop
    variates = getattr(loop.aggregator, "c_i", {})
    overhead = [r["round_seconds"] - sum(m["seconds"] for m in r["client_metrics"].values()) for r in records]
    trained = [sum(m["seconds"] for m in r["client_metrics"].values()) for r in records]
    return {
        "fed_alg": fed_alg, "clients": int(clients), "peak_rss": peak_rss_mb(), "rss_setup": rss_setup,
        "rss_end": rss_mib(), "setup_seconds": setup_seconds,
        "overhead_ms": 1000 * statistics.median(overhead), "train_ms": 1000 * statistics.median(trained),
        "sampled": len({int(c) for r in records for c in r["clients"]}),
        "state_mib": sum(num_bytes(v) for v in variates.values()) / 2**20, "num_variates": len(variates),
    }


def main(argv: list[str] | None = None) -> None:
    """Run every (algorithm, clients) child and print the table."""
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return
    from utils.tiny_model import save_tiny_model

    passed = list(argv if argv is not None else sys.argv[1:])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp) / "tiny")
        data = Path(tmp) / "rows.jsonl"
        write_dataset(data, args.num_rows)
        for fed_alg in args.algorithms:
            for clients in args.clients:
                out = subprocess.run(
                    [sys.executable, __file__, *passed, "--child", fed_alg, str(clients), str(data), str(model)],
                    check=True, capture_output=True, text=True,
                )
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  {fed_alg} {clients}: done, load {load_average()}", file=sys.stderr)
    print(machine_line(set_threads(args.threads)))
    print(f"tiny model, {args.num_rows} rows in all, 2 clients sampled per round, {args.num_rounds} rounds x "
          f"{args.max_steps} steps of batch {args.batch_size}; load {load_average()}")
    table = []
    for r in results:
        base = next(b for b in results if b["fed_alg"] == r["fed_alg"] and b["clients"] == min(args.clients))
        table.append([
            r["fed_alg"], r["clients"], f"{r['setup_seconds']:.1f}", f"{r['rss_setup']:.0f}", f"{r['peak_rss']:.0f}",
            f"{r['peak_rss'] - base['peak_rss']:+.0f}", f"{r['num_variates']} x c_i = {r['state_mib']:.3f}",
            f"{r['overhead_ms']:.0f}", f"{r['train_ms']:.0f}",
        ])
    print(markdown_table(
        ["algorithm", "clients", "setup (s)", "RSS after setup (MiB)", "peak RSS (MiB)",
         f"peak vs {min(args.clients)} clients (MiB)", "per-client state needed (MiB)",
         "round overhead (ms, median)", "clients' train() (ms, median)"],
        table,
    ))


if __name__ == "__main__":
    main()
