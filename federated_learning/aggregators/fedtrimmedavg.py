"""Coordinate-wise trimmed mean (Yin et al., ICML 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates").

Update: for each coordinate, sort the n clients' values y_i, leave out the k = floor(β·n) largest
and the k smallest, and set x to the mean of the n - 2k left (``--trim_fraction`` β in [0, 0.5)):
x + the same trimmed mean of the updates Δ_i = y_i - x. The paper's guarantee needs β above the
fraction of Byzantine clients; β = 0 is the unweighted mean.

Deliberate differences: the paper trims the workers' gradients for one step of gradient descent;
here, as Flower's ``FedTrimmedAvg`` (whose default β is also 0.2), the clients' adapters after
their local steps. k is rounded down, so a round of fewer than 1/β clients trims nothing (the flag
check refuses a --sample_clients that small; a round with rejected replies can still fall under
it). Every client counts once, whatever its ``num_examples``. A key no client sends stays as it
is; clients train at the global rank (no ``--client_lora_ranks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config import FedArguments
from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._hyperparameters import check_hyperparameters, trimmed_per_side
from federated_learning.aggregators._registry import register
from federated_learning.aggregators._robust import coordinate_wise, robust_keys, trimmed_mean
from federated_learning.types import ClientUpdate, StateDict


@register
class FedTrimmedAvg(Aggregator):
    """Coordinate-wise β-trimmed mean of the client adapters."""

    name = "fedtrimmedavg"

    def __init__(self, *, trim_fraction: float = FedArguments.trim_fraction) -> None:
        """``trim_fraction`` β in [0, 0.5): the share of values left out at each end of every coordinate."""
        check_hyperparameters(trim_fraction=trim_fraction)
        self.trim_fraction = float(trim_fraction)
        self._trimmed = 0

    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """Return the global state with every key the clients sent replaced by its coordinate-wise trimmed mean."""
        keys = robust_keys(self, global_params, updates, server_round)
        self._trimmed = trimmed_per_side(len(updates), self.trim_fraction)
        return coordinate_wise(global_params, updates, keys, trimmed_mean(self._trimmed))

    def round_record(self) -> dict[str, Any]:
        """The values left out at each end of every coordinate in the last round."""
        return {"trimmed_per_side": self._trimmed}
