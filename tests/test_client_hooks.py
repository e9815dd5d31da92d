"""Client-side hooks (FedProx's proximal gradient, SCAFFOLD's correction), alone and in federated loops."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from federated_learning import ClientUpdate, get_aggregator, get_client_algorithm
from federated_learning.aggregators._openfedllm import OpenFedLLMScaffoldHook
from federated_learning.aggregators.fedprox import FedProxHook
from federated_learning.aggregators.scaffold import ScaffoldHook
from federated_learning.client import HookCallback

# The hooks ignore args/state/control (they read the optimizer from kwargs, as Trainer passes it).
EVENT: tuple[Any, Any, Any] = (None, None, None)


def _param(values: list[float]) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values))


# ----------------------------------------------------------------------------- FedProx


def test_fedprox_mu_zero_is_a_noop() -> None:
    w = _param([1.0, -2.0, 3.0])
    w.grad = torch.tensor([0.5, -0.0, 7.0])
    before = w.grad.clone()
    FedProxHook(0.0, {"w": torch.zeros(3)}, {"w": w}).on_pre_optimizer_step(*EVENT)
    assert torch.equal(w.grad, before)
    assert get_client_algorithm("fedprox", prox_mu=0.0).hooks({}, {"w": torch.zeros(3)}, {"w": w}) == []


def test_fedprox_gradient_matches_autograd_of_penalty() -> None:
    gen = torch.Generator().manual_seed(0)
    mu = 0.3
    anchor = {"a": torch.randn(2, 3, generator=gen), "b": torch.randn(4, generator=gen)}
    params = {k: torch.nn.Parameter(t + torch.randn(t.shape, generator=gen)) for k, t in anchor.items()}
    data_grads = {k: torch.randn(t.shape, generator=gen) for k, t in anchor.items()}
    params["a"].grad = data_grads["a"].clone()
    # "b" has no gradient yet: the proximal gradient alone must appear.
    penalty = sum(mu / 2 * (params[k] - anchor[k]).pow(2).sum() for k in params)
    expected = dict(zip(params, torch.autograd.grad(penalty, list(params.values())), strict=True))
    (hook,) = get_client_algorithm("fedprox", prox_mu=mu).hooks({}, anchor, params)
    hook.on_pre_optimizer_step(*EVENT)
    torch.testing.assert_close(params["a"].grad, data_grads["a"] + expected["a"])
    torch.testing.assert_close(params["b"].grad, expected["b"])
    assert hook.extras() == {}


# ----------------------------------------------------------------------------- SCAFFOLD, by hand


def _linear_steps(hook: ScaffoldHook, w: torch.nn.Parameter, g: torch.Tensor, lrs: list[float]) -> None:
    """SGD on the linear loss <g, w> (constant gradient g) with per-step learning rates ``lrs``."""
    opt = torch.optim.SGD([w], lr=lrs[0])
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        (g * w).sum().backward()
        hook.on_pre_optimizer_step(*EVENT, optimizer=opt)
        opt.step()
        hook.on_optimizer_step(*EVENT, optimizer=opt)
    hook.on_train_end(*EVENT, optimizer=opt)


@pytest.mark.parametrize("post_step", [False, True])
@pytest.mark.parametrize("lrs", [[0.1, 0.1, 0.1], [0.1, 0.2, 0.3]])
def test_scaffold_correction_and_control_variate(post_step: bool, lrs: list[float]) -> None:
    x = torch.tensor([1.0, 2.0])
    c, c_i, g = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.25]), torch.tensor([3.0, -4.0])
    w = torch.nn.Parameter(x.clone())
    hook_class = OpenFedLLMScaffoldHook if post_step else ScaffoldHook
    hook = hook_class({"c": {"w": c}, "c_i": {"w": c_i}}, {"w": x}, {"w": w})
    if not post_step:
        # One step by hand: the gradient becomes g + c - c_i = [1.5, -5.25].
        w.grad = g.clone()
        hook.on_pre_optimizer_step(*EVENT, optimizer=torch.optim.SGD([w], lr=0.1))
        assert w.grad.tolist() == [1.5, -5.25]
        hook = hook_class({"c": {"w": c}, "c_i": {"w": c_i}}, {"w": x}, {"w": w})
        w.grad = None
    _linear_steps(hook, w, g, lrs)
    # y = x - sum(lr) * (g + c - c_i): [1 - 1.5 s, 2 + 5.25 s] with s = sum(lr).
    s = sum(lrs)
    torch.testing.assert_close(w.detach(), torch.tensor([1.0 - 1.5 * s, 2.0 + 5.25 * s]))
    assert hook.steps == 3 and hook.lr_sums["w"] == pytest.approx(s)
    # c_i+ = c_i - c + (x - y) / s = c_i - c + (g + c - c_i) = g, so delta_c = g - c_i = [1, -4.25].
    delta_c = hook.extras()["delta_c"]["w"]
    assert delta_c.dtype == torch.float32
    torch.testing.assert_close(delta_c, torch.tensor([1.0, -4.25]))


def test_scaffold_control_variate_is_the_lr_weighted_mean_gradient_under_adam() -> None:
    """Paper form with a non-SGD optimizer: c_i+ = Σ lr_k g_k / Σ lr_k over the raw (uncorrected) gradients."""
    x = torch.tensor([1.0, -2.0])
    c, c_i = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.25])
    w = torch.nn.Parameter(x.clone())
    hook = ScaffoldHook({"c": {"w": c}, "c_i": {"w": c_i}}, {"w": x}, {"w": w})
    opt = torch.optim.Adam([w], lr=0.1)
    lrs, weighted = [0.1, 0.3], torch.zeros(2)
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        w.pow(2).sum().backward()  # g = 2w changes from step to step
        weighted += lr * w.grad
        hook.on_pre_optimizer_step(*EVENT, optimizer=opt)
        torch.testing.assert_close(w.grad, 2 * w.detach() + c - c_i)
        opt.step()
    hook.on_train_end(*EVENT, optimizer=opt)
    torch.testing.assert_close(hook.extras()["delta_c"]["w"], weighted / sum(lrs) - c_i)


def test_scaffold_without_variates_starts_at_zero_and_reports_after_training_only() -> None:
    x = torch.tensor([0.0, 1.0])
    w = torch.nn.Parameter(x.clone())
    hook = get_client_algorithm("scaffold", num_clients=4).hooks({}, {"w": x}, {"w": w})[0]
    with pytest.raises(RuntimeError, match="on_train_end"):
        hook.extras()
    _linear_steps(hook, w, torch.tensor([2.0, 1.0]), [0.5, 0.5])
    # No correction; delta_c = (x - y) / 1.0 - 0 = g.
    torch.testing.assert_close(hook.extras()["delta_c"]["w"], torch.tensor([2.0, 1.0]))


def test_scaffold_hook_needs_the_optimizer() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    hook = ScaffoldHook({}, {"w": torch.zeros(2)}, {"w": w})
    with pytest.raises(RuntimeError, match="optimizer"):
        hook.on_pre_optimizer_step(*EVENT)


# ----------------------------------------------------------------------------- through a real Trainer


class _Linear(torch.nn.Module):
    """loss = <w, x> averaged over the batch: its gradient is the mean input, whatever w is."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": (x * self.w).sum(-1).mean()}


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_scaffold_hook_with_trainer_and_optim_sgd(schedule: str, tmp_path: Any) -> None:
    """``--optim sgd``: the exact SCAFFOLD form, lr read from the trainer's optimizer at each step."""
    model = _Linear()
    x = {"w": model.w.detach().clone()}
    agg = get_aggregator("scaffold", num_clients=2)
    agg.c, agg.c_i = {"w": torch.tensor([0.5, -1.0])}, {0: {"w": torch.tensor([2.0, 0.25])}}
    (hook,) = get_client_algorithm("scaffold").hooks(agg.client_payload(0), x, {"w": model.w})
    args = TrainingArguments(
        output_dir=str(tmp_path), optim="sgd", learning_rate=0.1, lr_scheduler_type=schedule, max_steps=3,
        per_device_train_batch_size=2, max_grad_norm=0.0, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, use_cpu=True, remove_unused_columns=False,
    )
    rows = Dataset.from_dict({"x": [[3.0, -4.0]] * 8})
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[HookCallback([hook])])
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, torch.optim.SGD)
    # Constant: 3 * 0.1; linear decay to 0 over 3 steps: 0.1 + 0.0667 + 0.0333.
    s = 0.3 if schedule == "constant" else 0.2
    assert hook.steps == 3 and hook.lr_sums["w"] == pytest.approx(s)
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.0 - 1.5 * s, 2.0 + 5.25 * s]))
    torch.testing.assert_close(hook.extras()["delta_c"]["w"], torch.tensor([1.0, -4.25]))  # g - c_i


# ----------------------------------------------------------------------------- heterogeneous toy problem

# Client i minimises f_i(w) = a_i/2 * ||w - b_i||^2; the global objective (equal weights) is
# minimised at w* = sum a_i b_i / sum a_i. With many local SGD steps FedAvg drifts towards the
# unweighted mean of the b_i instead.
CURVATURES = [1.0, 2.0, 4.0]
OPTIMA = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
W_STAR = [sum(a * b[j] for a, b in zip(CURVATURES, OPTIMA, strict=True)) / sum(CURVATURES) for j in range(2)]


def _toy_federation(
    name: str, rounds: int = 40, local_steps: int = 20, lr: float = 0.05, optimizer: type = torch.optim.SGD, **hp: Any
) -> tuple[float, float]:
    """Run the federation with the algorithm's own client hooks; return (final ||x - w*||, last round's drift).

    Each client-round builds a fresh ``optimizer`` (as the local trainer does).
    """
    agg = get_aggregator(name, num_clients=len(CURVATURES), **hp)
    client = get_client_algorithm(name, **hp)
    x = {"w": torch.zeros(2)}
    w = torch.nn.Parameter(torch.zeros(2))
    drift = 0.0
    for r in range(rounds):
        updates = []
        for cid, (a, b) in enumerate(zip(CURVATURES, OPTIMA, strict=True)):
            with torch.no_grad():
                w.copy_(x["w"])
            opt = optimizer([w], lr=lr)
            hooks = client.hooks(agg.client_payload(cid), x, {"w": w})
            for _ in range(local_steps):
                opt.zero_grad()
                (a / 2 * (w - torch.tensor(b)).pow(2).sum()).backward()
                for hook in hooks:
                    hook.on_pre_optimizer_step(*EVENT, optimizer=opt)
                opt.step()
                for hook in hooks:
                    hook.on_optimizer_step(*EVENT, optimizer=opt)
            extras = {}
            for hook in hooks:
                hook.on_train_end(*EVENT, optimizer=opt)
                extras.update(hook.extras())
            updates.append(ClientUpdate(cid, {"w": w.detach().clone()}, 1, {}, extras))
        drift = sum(float((u.params["w"] - x["w"]).norm()) for u in updates) / len(updates)
        x = agg.aggregate(x, updates, r)
    return float((x["w"] - torch.tensor(W_STAR)).norm()), drift


def test_toy_fedavg_settles_away_from_optimum() -> None:
    err, drift = _toy_federation("fedavg")
    assert err > 0.3 and drift > 0.5  # measured 0.38 and 0.98: a fixed point, not slow convergence


@pytest.mark.parametrize("variant", ["paper", "openfedllm"])
def test_toy_scaffold_reaches_optimum(variant: str) -> None:
    err, drift = _toy_federation("scaffold", fedopt_variant=variant)
    assert err < 1e-4 and drift < 1e-4  # measured ~1e-7: the control variates cancel the drift


def test_toy_scaffold_with_adam_local_steps_corrects_the_drift() -> None:
    """With Adam, the control variates (mean gradients) still cancel the drift; Adam's steps of ~lr jitter."""
    avg_err, _ = _toy_federation("fedavg", lr=0.01, optimizer=torch.optim.Adam)
    err, _ = _toy_federation("scaffold", lr=0.01, optimizer=torch.optim.Adam)
    # Measured 0.51 (FedAvg) and 0.03 (SCAFFOLD). The drift form of c_i+ (OpenFedLLM's) stays at 0.51.
    assert avg_err > 0.4 and err < 0.1


def test_toy_fedprox_drifts_less_than_fedavg() -> None:
    avg_err, avg_drift = _toy_federation("fedavg")
    prox_err, prox_drift = _toy_federation("fedprox", prox_mu=1.0)
    # Measured: mean client drift ||y_i - x|| 0.73 vs 0.98; distance to w* 0.31 vs 0.38.
    assert prox_drift < 0.85 * avg_drift
    assert prox_err < 0.9 * avg_err
