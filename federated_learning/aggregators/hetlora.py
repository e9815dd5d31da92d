"""HetLoRA (Cho, Liu, Manoel, Joshi and Sahu, EMNLP 2024, "Heterogeneous LoRA for Federated Fine-tuning of
On-Device Foundation Models").

Clients of different ranks share one adapter of the largest rank r. Client k trains the global
adapter truncated to its rank r_k (its first r_k components) and regularises the components it
could give up: to its loss it adds λ Σ_layers ‖B_{:, t:r_k}‖_F ‖A_{t:r_k, :}‖_F with t = ⌊γ r_k⌋.
If that norm product ends the round lower than it started, the client prunes itself to rank
max(t, ``--hetlora_min_rank``) for good, zeroing the pruned components before it sends (local rank
self-pruning). The server zero-pads every update to rank r and averages the factors with sparsity
weights: p_k = ‖B_k A_k‖_F / Σ_j ‖B_j A_j‖_F, the norm over the client's whole update (all
layers). Update: A <- Σ_k p_k pad(A_k), B <- Σ_k p_k pad(B_k). The next round sends each client
the result truncated to its (possibly pruned) rank.

The penalty's gradient is added to the step's gradient after clipping (``ClientHook.on_pre_optimizer_step``),
and "shrank" compares the norm product at the end of the round with its value at the start of the
round (the client's start state); the server counts an update only up to the rank its client reports.

Flags: ``--client_lora_ranks`` (initial ranks; without it every client starts at r),
``--hetlora_gamma`` γ, ``--hetlora_lambda`` λ, ``--hetlora_min_rank``. The server keeps each
client's current rank (checkpointed); a client's reported rank is taken only if it is a whole
number between the minimum and the rank it trained.

Deliberate difference: the paper gives ranks per client by its device; with ``--client_lora_ranks``
they cycle over client ids (or come from a JSON file).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import torch

from federated_learning.aggregators._base import Aggregator, ClientAlgorithm, ClientHook
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._lora import check_lora_updates, padded, sent_keys
from federated_learning.aggregators._registry import register
from federated_learning.lora_ranks import factor_pairs, product, slice_rank
from federated_learning.state import weighted_average
from federated_learning.types import ClientUpdate, StateDict

RANK_METRIC = "lora_rank"


def _tail_norms(trainable: Mapping[str, torch.Tensor], pairs: Sequence[tuple[str, str]], start: int, end: int
                ) -> list[tuple[float, float]]:
    """(‖B_{:, start:end}‖_F, ‖A_{start:end, :}‖_F) of each layer."""
    return [(float(trainable[b][:, start:end].float().norm()), float(trainable[a][start:end].float().norm()))
            for a, b in pairs]


class HetLoraHook(ClientHook):
    """The pruning regulariser's gradient before each step; at the end, prune if the tail shrank."""

    def __init__(self, trainable: Mapping[str, torch.nn.Parameter], rank: int, gamma: float, lam: float,
                 min_rank: int) -> None:
        """``rank``: the rank this client trains."""
        self.trainable = dict(trainable)
        self.pairs = list(factor_pairs(list(trainable)).values())
        self.rank, self.lam = rank, lam
        self.cut = max(min_rank, math.floor(gamma * rank))
        self.start = self._penalty()
        self.kept_rank = rank

    def _penalty(self) -> float:
        return sum(nb * na for nb, na in _tail_norms(self.trainable, self.pairs, self.cut, self.rank))

    @torch.no_grad()
    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Add λ ∂(‖B_t‖‖A_t‖)/∂· to the tail components' gradients (where both norms are nonzero)."""
        if self.lam == 0 or self.cut >= self.rank:
            return
        for a_key, b_key in self.pairs:
            a, b = self.trainable[a_key], self.trainable[b_key]
            a_tail, b_tail = a[self.cut:self.rank], b[:, self.cut:self.rank]
            na, nb = float(a_tail.float().norm()), float(b_tail.float().norm())
            if na == 0 or nb == 0 or a.grad is None or b.grad is None:
                continue
            a.grad[self.cut:self.rank].add_(a_tail, alpha=self.lam * nb / na)
            b.grad[:, self.cut:self.rank].add_(b_tail, alpha=self.lam * na / nb)

    @torch.no_grad()
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Prune to the cut (zeroing the pruned components) if the tail's norm product went down."""
        if self.cut < self.rank and self._penalty() < self.start:
            for a_key, b_key in self.pairs:
                self.trainable[a_key][self.cut:self.rank] = 0
                self.trainable[b_key][:, self.cut:self.rank] = 0
            self.kept_rank = self.cut

    def metrics(self) -> dict[str, float]:
        """The rank the client keeps."""
        return {RANK_METRIC: self.kept_rank}


class HetLoraClient(ClientAlgorithm):
    """Regularises and self-prunes its rank."""

    def __init__(self, *, hetlora_gamma: float = 0.99, hetlora_lambda: float = 0.01, hetlora_min_rank: int = 1
                 ) -> None:
        """γ, λ and the minimum rank (see the module docstring)."""
        check_hyperparameters(hetlora_gamma=hetlora_gamma, hetlora_lambda=hetlora_lambda,
                              hetlora_min_rank=hetlora_min_rank)
        self.gamma, self.lam, self.min_rank = hetlora_gamma, hetlora_lambda, hetlora_min_rank

    def hooks(self, payload: Mapping[str, StateDict], global_params: StateDict,
              trainable: Mapping[str, torch.nn.Parameter], lora_rank: int = 0) -> list[ClientHook]:
        """The regulariser-and-pruning hook at this client's rank."""
        pairs = factor_pairs(list(trainable))
        rank = lora_rank or int(trainable[next(iter(pairs.values()))[0]].shape[0])
        return [HetLoraHook(trainable, rank, self.gamma, self.lam, self.min_rank)]


@register
class HetLoRA(Aggregator):
    """Sparsity-weighted mean of the zero-padded factors; tracks every client's rank."""

    name = "hetlora"
    client_class = HetLoraClient
    supports_client_ranks = True

    def __init__(self, *, hetlora_min_rank: int = 1) -> None:
        """``hetlora_min_rank``: the lowest rank a client may report."""
        check_hyperparameters(hetlora_min_rank=hetlora_min_rank)
        self.min_rank = hetlora_min_rank
        self.ranks: dict[int, int] = {}

    def client_rank(self, client_id: int, rank: int) -> int:
        """The client's pruned rank once it has pruned, else its ``--client_lora_ranks`` entry."""
        return self.ranks.get(client_id, rank)

    @torch.no_grad()
    def aggregate(self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int) -> StateDict:
        """Σ_k p_k pad(A_k), Σ_k p_k pad(B_k) with p_k ∝ ‖B_k A_k‖_F; record each client's kept rank."""
        check_lora_updates(global_params, updates, sent_keys(self, global_params, server_round),
                           self.supports_client_ranks)
        pairs = list(factor_pairs(list(global_params)).values())
        norms, kept = [], []
        for update in updates:
            trained = int(update.params[pairs[0][0]].shape[0])
            reported = update.metrics.get(RANK_METRIC)
            rank = trained
            if (isinstance(reported, Integral | float) and not isinstance(reported, bool)
                    and float(reported).is_integer() and self.min_rank <= reported <= trained):
                rank = int(reported)
                self.ranks[update.client_id] = rank
            params = slice_rank(update.params, rank)  # what a client pruned away does not count, whatever it sent
            kept.append(params)
            norms.append(math.sqrt(sum(float(product(params, a, b).square().sum()) for a, b in pairs)))
        weights = norms if sum(norms) > 0 else [1.0] * len(updates)
        mean = weighted_average([padded(global_params, params) for params in kept], weights)
        return {key: mean[key] if key in mean else x.clone() for key, x in global_params.items()}

    def state_dict(self) -> dict[str, Any]:
        """Every client's current rank."""
        return {"ranks": {str(c): r for c, r in sorted(self.ranks.items())}} if self.ranks else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict``'s ranks (each a whole number at least the minimum)."""
        ranks = state.get("ranks", {})
        for key, rank in ranks.items():
            if not str(key).isdigit() or isinstance(rank, bool) or not isinstance(rank, int) or rank < self.min_rank:
                raise ValueError(f"rank {rank!r} of client {key!r} is not a whole number >= {self.min_rank}")
        self.ranks = {int(k): r for k, r in ranks.items()}
