"""Seconds per local step of the project's trainer against a bare PyTorch loop, and MFU.

One local LoRA step on the embedded model (SmolLM2-135M-Instruct; batch 4 x sequence 256, LoRA r 8
on q_proj,v_proj, the project's defaults otherwise) through the project's own path
(``load_peft_model`` -> the task's ``build_trainer`` -> ``LocalTrainer.train``), against the floor
for the same work: a bare PyTorch loop over the *same batches* on the project's model (its
label-only LM head and bf16 frozen weights; forward, backward, AdamW, the same bf16 autocast, no
Trainer). That equal-work ratio is the headline: it is what the trainer costs. Also timed, as a
second line: the same bare loop on a plainly loaded copy of the model, which does more work (full
fp32 logits over every position, fp32 frozen weights cast at every forward), and, with
``--before``, the project's trainer without this repository's speed-ups (TRL's own LM head,
float32 frozen weights, a full garbage collection per train() call). All loops alternate in one
process, so load from other processes hits them alike.

Timing: with one thread, CPU seconds of the process (``time.process_time``) are the figure of
record: they hardly move when other processes share the cores, where wall seconds do; wall seconds
are printed too. A step is timed from the end of the previous one to its own end (batch fetch
included); the first step of each block is left out (warm-up). The ``train()`` fixed cost is the
call's time minus its steps.

Model-FLOPs utilisation: an SFT LoRA step costs 4 x parameters x tokens FLOPs (forward 2, backward
through frozen weights 2, no weight gradients); a DPO step 6 x parameters x tokens (plus the
reference forward, 2), with tokens = chosen + rejected. The 2048² matmul peak is measured in the
same run with the same clock, in bf16 and fp32.

    .venv/bin/python benchmarks/bench_step.py                      # SFT, 1 thread
    .venv/bin/python benchmarks/bench_step.py --before             # + the trainer without the speed-ups
    .venv/bin/python benchmarks/bench_step.py --mode dpo
    .venv/bin/python benchmarks/bench_step.py --threads 2 --repeats 5 --label_fraction 1.0
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_dpo_memory import synthetic_rows  # noqa: E402
from benchmarks.common import (  # noqa: E402
    load_average,
    machine_line,
    markdown_table,
    matmul_gflops,
    median,
    peak_rss_mb,
    set_threads,
    sync,
)
from config import FedArguments, RunConfig, ScriptArguments  # noqa: E402
from federated_learning import trainers  # noqa: E402
from federated_learning.build import load_peft_model, use_bf16  # noqa: E402
from federated_learning.client import LocalTrainer  # noqa: E402
from federated_learning.tasks import get_task  # noqa: E402

logger = logging.getLogger("bench_step")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
Stamp = tuple[float, float]  # (wall seconds, CPU seconds)
EQUAL_WORK = "bare loop, equal work (the project's model)"
FULL_LOGITS = "bare loop, full fp32 logits (a plain model)"


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("sft", "dpo"), default="sft")
    parser.add_argument("--model_name_or_path", default="embedded")
    parser.add_argument("--batch_size", type=int, default=4, help="SFT examples / DPO pairs per step")
    parser.add_argument("--seq_length", type=int, default=256, help="tokens per sequence (prompt + completion)")
    parser.add_argument("--label_fraction", type=float, default=0.5,
                        help="share of each sequence that is completion (carries labels); the rest is prompt")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed block (one train() call)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the loops (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: all CPUs)")
    parser.add_argument("--before", action="store_true", help="also time the trainer without the speed-ups")
    parser.add_argument("--dpo_beta", type=float, default=0.1)
    return parser.parse_args()


def stamp() -> Stamp:
    """Wall and process-CPU clocks now (after queued GPU work)."""
    sync(DEVICE)
    return time.perf_counter(), time.process_time()


def elapsed(start: Stamp, end: Stamp) -> Stamp:
    """(wall, CPU) seconds from ``start`` to ``end``."""
    return end[0] - start[0], end[1] - start[1]


class StepClock(TrainerCallback):
    """Stamps the start of the epoch and the end of every optimizer step of a train() call."""

    def __init__(self) -> None:
        self.marks: list[Stamp] = []

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.marks = [stamp()]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.marks.append(stamp())

    def steps(self) -> list[Stamp]:
        """Every step's (wall, CPU) seconds."""
        return [elapsed(a, b) for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]


def sequence_log_probs(model: torch.nn.Module, batch: dict[str, torch.Tensor], fused: bool) -> torch.Tensor:
    """Summed log-probability of each sequence's completion tokens (full logits, or the fused head)."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if fused:
        return model(**inputs, labels=labels, fused_lm_head=True).log_probs.sum(-1)
    logits = model(**inputs).logits[:, :-1].float()
    targets = labels[:, 1:]
    per_token = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (per_token * (targets != -100)).sum(-1)


def sft_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], fused: bool, beta: float) -> torch.Tensor:
    """The model's own causal-LM loss over the labelled tokens."""
    return model(**batch, fused_lm_head=True).loss if fused else model(**batch).loss


def dpo_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], fused: bool, beta: float) -> torch.Tensor:
    """Sigmoid DPO loss; the reference is the base model (adapter disabled), as the project's default."""
    policy = sequence_log_probs(model, batch, fused)
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_log_probs(model, batch, fused)
    chosen, rejected = (policy - reference).chunk(2)
    return -F.logsigmoid(beta * (chosen - rejected)).mean()


class BareLoop:
    """Forward, backward, AdamW over given batches, under the same autocast as the trainer."""

    def __init__(self, model: torch.nn.Module, loss: Callable[..., torch.Tensor], fused: bool, lr: float,
                 bf16: bool, beta: float) -> None:
        self.model, self.loss, self.fused, self.bf16, self.beta = model, loss, fused, bf16, beta
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def run(self, batches: list[dict[str, torch.Tensor]]) -> list[Stamp]:
        """Every step's (wall, CPU) seconds."""
        self.model.train()
        times = []
        for batch in batches:
            start = stamp()
            with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.loss(self.model, batch, self.fused, self.beta)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            times.append(elapsed(start, stamp()))
        return times


@contextlib.contextmanager
def without_speedups() -> Iterator[None]:
    """Build trainers as before this repository's speed-ups (TRL's head, float32 frozen weights)."""
    with mock.patch.object(trainers, "speed_up_local_steps", lambda trainer, bf16: None):
        yield


@contextlib.contextmanager
def full_collection_per_call() -> Iterator[None]:
    """Run a train() call without LocalTrainer's gc.freeze (the collection walks every object again)."""
    with mock.patch.object(gc, "freeze", lambda: None), mock.patch.object(gc, "unfreeze", lambda: None):
        yield


class ProjectLoop:
    """The project's path: a trainer built by the project's builder, trained through LocalTrainer."""

    def __init__(self, args: argparse.Namespace, script_args: ScriptArguments, rows: Any, tmp: str,
                 before: bool = False) -> None:
        self.before = before
        self.model, tokenizer = load_peft_model(script_args)
        task = get_task(args.mode)
        cfg = RunConfig(args.mode, script_args, FedArguments(), task.config_class() if task.config_class else None)
        bf16 = use_bf16(script_args)
        with without_speedups() if before else contextlib.nullcontext():
            trainer = task.build_trainer(self.model, tokenizer, rows, cfg, Path(tmp) / "trainer", bf16)
        self.collator = trainer.data_collator
        self.local = LocalTrainer(trainer, show_progress=False)
        self.clock = StepClock()
        trainer.add_callback(self.clock)
        self.rows, self.lr, self.calls = rows, script_args.learning_rate, 0

    def run(self) -> tuple[list[Stamp], Stamp]:
        """One train() call: every step's (wall, CPU) seconds, and the call's."""
        self.calls += 1
        start = stamp()
        with full_collection_per_call() if self.before else contextlib.nullcontext():
            self.local.train(0, self.rows, self.lr, seed=self.calls)
        return self.clock.steps(), elapsed(start, stamp())


def make_rows(args: argparse.Namespace, vocab: int) -> Any:
    """``batch_size x steps`` synthetic rows of exactly ``seq_length`` tokens per sequence."""
    shape = SimpleNamespace(batch_size=args.batch_size, max_steps=args.steps, seq_length=args.seq_length,
                            prompt_fraction=1 - args.label_fraction)
    return synthetic_rows(args.mode, shape, vocab)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the loops ``repeats`` times after one warm-up alternation; return their timings."""
    with tempfile.TemporaryDirectory() as tmp:
        script_args = ScriptArguments(
            model_name_or_path=args.model_name_or_path, batch_size=args.batch_size, seq_length=args.seq_length,
            max_steps=args.steps, output_dir=tmp, torch_threads=args.threads, dpo_beta=args.dpo_beta,
        )
        bf16 = use_bf16(script_args)
        plain, tokenizer = load_peft_model(script_args)
        rows = make_rows(args, len(tokenizer))
        project = ProjectLoop(args, script_args, rows, tmp)
        before = ProjectLoop(args, script_args, rows, tmp, before=True) if args.before else None
        batches = [
            {k: v.to(DEVICE) for k, v in project.collator([rows[i] for i in range(s, s + args.batch_size)]).items()}
            for s in range(0, len(rows), args.batch_size)
        ]
        loss = sft_loss if args.mode == "sft" else dpo_loss
        bare = BareLoop(plain, loss, False, script_args.learning_rate, bf16, args.dpo_beta)
        bare_on_project = BareLoop(project.model, loss, True, script_args.learning_rate, bf16, args.dpo_beta)
        names = [FULL_LOGITS, EQUAL_WORK, "project (LocalTrainer)"]
        if before is not None:
            names.append("project, before the speed-ups")
        steps: dict[str, list[Stamp]] = {name: [] for name in names}
        calls: dict[str, list[Stamp]] = {name: [] for name in names[2:]}
        for repeat in range(args.repeats + 1):
            timed = {names[0]: bare.run(batches), names[1]: bare_on_project.run(batches)}
            for name, loop in zip(names[2:], (project, before), strict=False):
                timed[name], call = loop.run()
                if repeat:  # the call's time outside its steps, per clock
                    calls[name].append(tuple(call[i] - sum(t[i] for t in timed[name]) for i in (0, 1)))
            if repeat:  # the first alternation warms every loop up
                for name, times in timed.items():
                    steps[name] += times[1:]
                logger.info("repeat %d: %s; load %s", repeat,
                            ", ".join(f"{n} {median([t[1] for t in ts[1:]]):.2f}" for n, ts in timed.items()),
                            load_average())
        params = sum(p.numel() for p in plain.parameters())
    tokens = args.batch_size * args.seq_length * (1 if args.mode == "sft" else 2)
    return {"steps": steps, "calls": calls, "bf16": bf16, "flops": (4 if args.mode == "sft" else 6) * params * tokens,
            "tokens": tokens}


def main() -> None:
    """Run the benchmark and print the table."""
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    threads = set_threads(args.threads)
    cpu_clock = threads == 1 and DEVICE == "cpu"
    dtypes = (torch.bfloat16, torch.float32)
    peaks = {dtype: matmul_gflops(dtype, device=DEVICE, cpu_time=cpu_clock) for dtype in dtypes}
    result = measure(args)  # the peak is measured before and after: the better of the two counts
    peaks = {dtype: max(peaks[dtype], matmul_gflops(dtype, device=DEVICE, cpu_time=cpu_clock)) for dtype in dtypes}
    which = 1 if cpu_clock else 0
    seconds = {name: median([t[which] for t in times]) for name, times in result["steps"].items()}
    walls = {name: median([t[0] for t in times]) for name, times in result["steps"].items()}
    equal, full = seconds[EQUAL_WORK], seconds[FULL_LOGITS]
    flops = result["flops"]
    table = [
        [name, f"{seconds[name]:.3f}", f"{walls[name]:.3f}", f"{result['tokens'] / seconds[name]:.0f}",
         f"{flops / seconds[name] / 1e9:.0f}", f"{100 * flops / seconds[name] / 1e9 / peaks[torch.bfloat16]:.1f}%",
         f"{seconds[name] / equal:.2f}", f"{seconds[name] / full:.2f}"]
        for name in result["steps"]
    ]
    clock = "CPU" if cpu_clock else "wall"
    print(machine_line(threads))
    print(f"{args.mode}: batch {args.batch_size} x seq {args.seq_length}, labels on {args.label_fraction:.0%} of "
          f"each sequence, bf16 autocast {result['bf16']}, {len(result['steps'][EQUAL_WORK])} timed steps per loop; "
          f"load {load_average()}; peak RSS {peak_rss_mb():.0f} MiB")
    print(f"matmul 2048² peak ({clock} clock): bf16 {peaks[torch.bfloat16]:.0f} GFLOP/s, fp32 "
          f"{peaks[torch.float32]:.0f} GFLOP/s (bf16/fp32 {peaks[torch.bfloat16] / peaks[torch.float32]:.1f}x)")
    print(markdown_table(["loop", f"{clock} s/step", "wall s/step", "tokens/s", "GFLOP/s", "MFU (bf16 peak)",
                          "x equal-work loop", "x full-logits loop"], table))
    project = seconds["project (LocalTrainer)"]
    print(f"headline: the project's step is {project / equal:.2f}x the equal-work bare loop ({project:.3f} vs "
          f"{equal:.3f} {clock} s); against the full-logits loop, which does more work, {project / full:.2f}x")
    for name, outside in result["calls"].items():
        print(f"{name}: train() fixed cost per call (call - its {args.steps} steps): "
              f"{median([o[which] for o in outside]):.3f} {clock} s, {median([o[0] for o in outside]):.3f} wall s")
    if DEVICE == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
