"""FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data").

Update: x <- sum_i (n_i / n) * y_i over the clients i that trained this round, where y_i is client
i's adapter after local training and n_i its ``num_examples`` (n = sum_i n_i).
"""

from __future__ import annotations

from collections.abc import Sequence

from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._pseudo_gradient import check_updates
from federated_learning.aggregators._registry import register
from federated_learning.state import weighted_average
from federated_learning.types import ClientUpdate, StateDict


@register
class FedAvg(Aggregator):
    """Weighted mean of the client adapters."""

    name = "fedavg"

    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """Return the mean of the client adapters weighted by their number of examples."""
        check_updates(global_params, updates)
        return weighted_average([u.params for u in updates], [u.num_examples for u in updates])
