"""Simulated poisoning: what a malicious client sends instead of its honest update (``--attack``).

For studying the robust aggregators (``fedmedian``, ``fedtrimmedavg``, ``krum``, ``multikrum``,
``--update_norm_bound clip``) in the simulation: each client of ``--attack_clients`` trains as
usual, then replaces its honest update Δ = y - x (from the start x it was sent) by

* ``scale``: x + s·Δ (a boosted update, as in model-replacement backdoors),
* ``sign_flip``: x - s·Δ (gradient ascent on its own data),
* ``random``: x + s·||Δ||·z/||z||, z standard Gaussian drawn from (--seed, client, round): noise of
  the scaled update's norm,

s = ``--attack_scale``, over every key it sends; its example count, metrics and extras are left as
they are. The server sees a well-formed reply, so only the aggregator (or the norm bound) can
defend against it. A Flower run refuses ``--attack``: a real malicious SuperNode runs its own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from federated_learning.types import ClientUpdate, StateDict


@dataclass(frozen=True)
class Attack:
    """The run's ``--attack``: which clients poison their updates, how, and by how much."""

    kind: str
    clients: frozenset[int]
    scale: float
    seed: int

    @torch.no_grad()
    def apply(self, update: ClientUpdate, start: StateDict, server_round: int) -> ClientUpdate:
        """``update`` as client ``update.client_id`` sends it: poisoned when it is malicious, else as it is."""
        if self.kind == "none" or update.client_id not in self.clients:
            return update
        keys = list(update.params)
        deltas = {k: update.params[k].double() - start[k].double() for k in keys}
        if self.kind == "random":
            entropy = np.random.SeedSequence([self.seed, update.client_id, server_round]).generate_state(1)[0]
            gen = torch.Generator().manual_seed(int(entropy))
            noise = {k: torch.randn(deltas[k].shape, generator=gen, dtype=torch.float64) for k in keys}
            norm = math.sqrt(sum(float(d.square().sum()) for d in deltas.values()))
            noise_norm = math.sqrt(sum(float(z.square().sum()) for z in noise.values())) or 1.0
            deltas = {k: noise[k] * (self.scale * norm / noise_norm) for k in keys}
        else:
            factor = self.scale if self.kind == "scale" else -self.scale
            deltas = {k: d * factor for k, d in deltas.items()}
        params = {k: (start[k].double() + deltas[k]).to(update.params[k].dtype) for k in keys}
        return ClientUpdate(update.client_id, params, update.num_examples, update.metrics, update.extras)
