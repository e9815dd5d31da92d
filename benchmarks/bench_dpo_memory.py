"""Peak memory of one DPO client-round against one SFT client-round at the same batch size and length.

Each mode runs in a fresh child process, through the project's own path (``load_peft_model`` ->
the task's ``build_trainer`` -> ``LocalTrainer.train``, as a round trains a
client). Rows are synthetic token ids of exactly ``--seq_length`` tokens: an SFT row is a prompt
plus a completion, a DPO pair the same prompt plus a chosen and a rejected completion of the same
length, so a DPO step sees twice the sequences of an SFT step (the chosen and rejected halves of
its batch) and additionally a no-grad reference forward. Resident memory (RSS) is sampled every
5 ms during the round; the process high-water mark (which includes loading) is printed too.

    .venv/bin/python benchmarks/bench_dpo_memory.py                          # embedded model, batch 8 x 256
    .venv/bin/python benchmarks/bench_dpo_memory.py --batch_size 4 --seq_length 512 --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_line, markdown_table, peak_rss_mb, set_threads  # noqa: E402

PAGE_MIB = 4096 / 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (the parent passes them on to the two children)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default="embedded")
    parser.add_argument("--batch_size", type=int, default=8, help="SFT examples / DPO pairs per step")
    parser.add_argument("--seq_length", type=int, default=256, help="tokens per sequence (prompt + completion)")
    parser.add_argument("--prompt_fraction", type=float, default=0.5, help="share of a sequence that is prompt")
    parser.add_argument("--max_steps", type=int, default=3, help="local steps of the measured round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: all CPUs)")
    parser.add_argument("--mode", choices=("sft", "dpo"), help=argparse.SUPPRESS)  # set for the children
    return parser.parse_args(argv)


def current_rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_MIB


class RssSampler:
    """Highest RSS seen by a background thread between ``start`` and ``stop``."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_mib())
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, current_rss_mib())


def synthetic_rows(mode: str, args: argparse.Namespace, vocab: int) -> Any:
    """``batch_size x max_steps`` pre-tokenised rows of exactly ``seq_length`` tokens per sequence."""
    from datasets import Dataset

    from utils.sft_tokenize import IGNORE_INDEX

    n = args.batch_size * args.max_steps
    prompt = max(1, round(args.prompt_fraction * args.seq_length))
    completion = args.seq_length - prompt
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab, (n, prompt + 2 * completion), generator=generator).tolist()
    if mode == "sft":
        return Dataset.from_dict({
            "input_ids": [row[: args.seq_length] for row in ids],
            "labels": [[IGNORE_INDEX] * prompt + row[prompt: args.seq_length] for row in ids],
        })
    return Dataset.from_dict({
        "prompt_ids": [row[:prompt] for row in ids],
        "chosen_ids": [row[prompt: args.seq_length] for row in ids],
        "rejected_ids": [row[args.seq_length:] for row in ids],
    })


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model, build the mode's trainer, train one client-round; return the memory figures."""
    from federated_learning.build import load_peft_model, use_bf16
    from federated_learning.cli import parse_run
    from federated_learning.client import LocalTrainer
    from federated_learning.tasks import get_task

    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_run(args.mode, [
            "--model_name_or_path", args.model_name_or_path, "--batch_size", str(args.batch_size),
            "--seq_length", str(args.seq_length), "--max_steps", str(args.max_steps), "--output_dir", tmp,
            "--torch_threads", str(args.threads), "--learning_rate", "5e-4",
        ])
        script_args = cfg.script
        model, tokenizer = load_peft_model(script_args)
        bf16 = use_bf16(script_args)
        rows = synthetic_rows(args.mode, args, len(tokenizer))
        trainer = get_task(args.mode).build_trainer(model, tokenizer, rows, cfg, Path(tmp) / "trainer", bf16)
        local = LocalTrainer(trainer, show_progress=False)
        before = current_rss_mib()
        sampler = RssSampler()
        sampler.start()
        start = time.perf_counter()
        metrics = local.train(0, rows, script_args.learning_rate, seed=0)
        seconds = time.perf_counter() - start
        round_peak = sampler.stop()
    return {"mode": args.mode, "rss_before_round": before, "round_peak": round_peak,
            "process_peak": peak_rss_mb(), "seconds": seconds, "steps": metrics["steps"], "bf16": bf16}


def main(argv: list[str] | None = None) -> None:
    """Run both children one after the other and print the table and the DPO / SFT ratio."""
    args = parse_args(argv)
    if args.mode is not None:
        print(json.dumps(child(args)))
        return
    passed = list(argv if argv is not None else sys.argv[1:])
    results = {}
    for mode in ("sft", "dpo"):
        out = subprocess.run([sys.executable, __file__, *passed, "--mode", mode], check=True,
                             capture_output=True, text=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(machine_line(set_threads(args.threads)))
    print(f"{args.model_name_or_path}: batch {args.batch_size} x seq {args.seq_length} (prompt "
          f"{args.prompt_fraction:.0%}), {args.max_steps} local steps, bf16 autocast {results['sft']['bf16']}; "
          f"load {load_average()}")
    rows = [
        [mode.upper(), f"{r['rss_before_round']:.0f}", f"{r['round_peak']:.0f}",
         f"{r['round_peak'] - r['rss_before_round']:.0f}", f"{r['process_peak']:.0f}",
         f"{r['seconds'] / r['steps']:.2f}"]
        for mode, r in results.items()
    ]
    print(markdown_table(["round", "RSS before (MiB)", "peak RSS in round (MiB)", "round growth (MiB)",
                          "process peak (MiB)", "s/step"], rows))
    sft, dpo = results["sft"], results["dpo"]
    growth = {mode: r["round_peak"] - r["rss_before_round"] for mode, r in results.items()}
    print(f"DPO / SFT peak RSS in round: {dpo['round_peak'] / sft['round_peak']:.2f}x "
          f"(growth over the loaded model: {growth['dpo'] / max(1.0, growth['sft']):.2f}x)")


if __name__ == "__main__":
    main()
