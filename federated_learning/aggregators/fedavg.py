"""FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data").

Update: x <- sum_i (n_i / n) * y_i over the clients i that trained this round, where y_i is client
i's adapter after local training and n_i its ``num_examples`` (n = sum_i n_i).

Applied to what the clients send: a key no client sends stays as it is (the LoRA-aware subclasses
send only some factors), and with ``--client_lora_ranks`` a client's factors of lower rank are
zero-padded to the global rank before averaging (the zero-padding baseline of HetLoRA, Cho et al.,
EMNLP 2024: the higher components are averaged with zeros from the clients that lack them).
"""

from __future__ import annotations

from collections.abc import Sequence

from federated_learning.aggregators._base import Aggregator
from federated_learning.aggregators._lora import check_lora_updates, padded, sent_keys
from federated_learning.aggregators._registry import register
from federated_learning.state import weighted_average
from federated_learning.types import ClientUpdate, StateDict


@register
class FedAvg(Aggregator):
    """Weighted mean of the client adapters."""

    name = "fedavg"
    supports_client_ranks = True

    def aggregate(
        self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int
    ) -> StateDict:
        """Return the global state with every key the clients sent replaced by their mean weighted by examples."""
        check_lora_updates(global_params, updates, sent_keys(self, global_params, server_round),
                           self.supports_client_ranks)
        mean = weighted_average([padded(global_params, u.params) for u in updates], [u.num_examples for u in updates])
        return {key: mean[key] if key in mean else x.clone() for key, x in global_params.items()}
