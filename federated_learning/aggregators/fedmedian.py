"""Coordinate-wise median (Yin et al., ICML 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates").

Update: x <- med_i(y_i), coordinate by coordinate, over the n clients i that trained this round
(the middle value for odd n, the mean of the two middle values for even n), which is x + med_i(Δ_i)
for the updates Δ_i = y_i - x: one client's value, however large, moves a coordinate at most to
its neighbours' values.

Deliberate differences: the paper takes the median of the workers' gradients for one step of
gradient descent; here, as Flower's ``FedMedian``, of the clients' adapters after their local
steps. Every client counts once, whatever its ``num_examples`` (a Byzantine client could claim any
count). A key no client sends stays as it is; clients train at the global rank (no
``--client_lora_ranks``).
"""

from __future__ import annotations

from collections.abc import Sequence

from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._registry import register
from federated_learning.aggregators._robust import coordinate_wise, median, robust_keys
from federated_learning.types import ClientUpdate, StateDict


@register
class FedMedian(Aggregator):
    """Coordinate-wise median of the client adapters."""

    name = "fedmedian"

    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """Return the global state with every key the clients sent replaced by its coordinate-wise median."""
        keys = robust_keys(self, global_params, updates, server_round)
        return coordinate_wise(global_params, updates, keys, median)
