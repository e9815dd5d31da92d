"""Resuming a ``RoundLoop`` from a checkpoint: every saved piece checked against the run before anything is set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from federated_learning.state import set_state
from federated_learning.traffic import Traffic, load_residuals
from federated_learning.types import StateDict

if TYPE_CHECKING:
    from federated_learning.round_loop import RoundLoop


def restore(loop: RoundLoop, rounds_done: int, global_params: StateDict, server_state: dict[str, Any]) -> None:
    """Continue ``loop`` from a checkpoint written by ``save_checkpoint``; a ValueError says what does not fit."""
    where = "--resume_from_checkpoint"
    if server_state.get("fed_alg") != loop.plan.fed_alg:
        raise ValueError(
            f"{where} was written by --fed_alg {server_state.get('fed_alg')}, "
            f"not {loop.plan.fed_alg}; resume with the same algorithm"
        )
    codecs = server_state.get("codecs", "up none, down none")  # a checkpoint from before codecs sent everything raw
    if codecs != loop.wire.describe():
        raise ValueError(f"{where} was written with codecs {codecs}, not {loop.wire.describe()}; resume with the "
                         "same --upload_codec, --download_codec and their options")
    if isinstance(rounds_done, bool) or not isinstance(rounds_done, int) or rounds_done < 0:
        raise ValueError(f"{where}: federated_state.json says rounds_done {rounds_done!r}; the file is damaged")
    if rounds_done > loop.plan.num_rounds:
        raise ValueError(f"{where} has {rounds_done} rounds done, more than --num_rounds {loop.plan.num_rounds}")
    shapes = {key: tuple(param.shape) for key, param in loop.trainable.items()}
    saved_shapes = {key: tuple(t.shape) for key, t in global_params.items()}
    if saved_shapes != shapes:
        differ = sorted(set(shapes) ^ set(saved_shapes)) or sorted(k for k in shapes
                                                                    if shapes[k] != saved_shapes[k])
        raise ValueError(f"{where}: its adapter does not fit this run's ({len(saved_shapes)} vs {len(shapes)} "
                         f"tensors, e.g. {differ[0]}); resume with the --peft_lora_r and --peft_target_modules "
                         "it was trained with")
    if not all(bool(torch.isfinite(t).all()) for t in global_params.values()):
        raise ValueError(f"{where}: its adapter holds NaN or Inf; resume from an earlier checkpoint")
    saved = server_state.get("training_loss")
    if not isinstance(saved, torch.Tensor) or saved.dim() != 2 or saved.shape[0] != loop.plan.num_clients:
        raise ValueError(f"{where}: federated_state.safetensors holds no training-loss table for "
                         f"--num_clients {loop.plan.num_clients}; resume with the run's own --num_clients")
    try:
        loop.aggregator.load_state_dict(server_state.get("aggregator", {}))
        kept = loop.client_algorithm.kept_keys(list(shapes))
        if kept and rounds_done and "personal" not in server_state:
            raise ValueError("it holds no client's kept state (a Flower run's clients keep theirs on their "
                             "SuperNodes), so every client would restart")
        loop.personal.load_state_dict(server_state.get("personal", {}), {k: shapes[k] for k in kept},
                                      loop.plan.num_clients)
        if loop.wire.upload.error_feedback and rounds_done and "residuals" not in server_state:
            raise ValueError(f"it holds no client's error-feedback residual (a Flower run with --upload_codec "
                             f"{loop.wire.upload.name} keeps them on its SuperNodes), so every client would restart")
        residuals = load_residuals(server_state.get("residuals", {}), shapes, loop.plan.num_clients)
        traffic = Traffic.from_state(server_state.get("bytes_sent", {}))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise ValueError(f"{where}: the {loop.plan.fed_alg} server state in federated_state.* does not load "
                         f"({type(err).__name__}: {err}); resume from an earlier checkpoint") from err
    set_state(loop.trainable, global_params)
    loop.residuals, loop.traffic = residuals, traffic
    rounds = min(saved.shape[1], loop.plan.num_rounds)
    loop.training_loss[:, :rounds] = saved[:, :rounds].numpy()
    loop.rounds_done = rounds_done
    loop.truncate_metrics(rounds_done)
