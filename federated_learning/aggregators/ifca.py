"""IFCA (Ghosh, Chung, Yin, Ramchandran, NeurIPS 2020, "An Efficient Framework for Clustered Federated Learning").

The server keeps K cluster adapters θ_1..θ_K (``--ifca_clusters``). Every round each sampled client i
receives all K, estimates its cluster ĵ_i = argmin_j F_i(θ_j) (its loss on its rows of the round),
trains θ_ĵ locally and sends the result with ĵ_i; the server then averages within clusters (the
paper's model-averaging option, Algorithm 2):

    θ_j <- Σ_{i∈S_j} n_i θ_i / Σ_{i∈S_j} n_i     for every cluster j some client chose (S_j: those clients);

a cluster no client chose keeps its adapter. ĵ_i is in metrics.jsonl as ``client_metrics.<i>.cluster``
(with the K losses as ``cluster_loss_<j>``), every round. The round loop's global adapter
(checkpointed, scored by the pooled round evaluation) is the majority cluster's, the one most
clients chose last; each client's own model for ``--eval_per_client`` is the cluster it chose last
(a client never sampled: the global adapter). A cluster that no client has chosen is warned about
every round: once another cluster has trained, an untrained one rarely wins a client's loss
comparison again, and IFCA then runs as FedAvg on fewer clusters. The server checks every reply
against the cluster it names (a cluster that does not exist is refused). With K = 1 no loss is
computed and IFCA is FedAvg, byte for byte (tested).

Deliberate differences: the paper draws the K initial models at random; a LoRA adapter starts with
B = 0, so every such draw is the same function and every cluster's loss is equal, so all K start
from the run's initial adapter and a client breaks ties between equal losses with a seeded draw
per (client, round) (the first round spreads the clients over the clusters at random; they
separate from there). The losses are the task's training loss (SFT's token loss, DPO's loss) in
eval mode on the round's rows, batched as training would batch them (seeded per client and round,
so a resumed run computes the same values). Clusters travel uncompressed (``--upload_codec``/``--download_codec``
none); IFCA runs in the simulation (not validated on Flower yet).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from typing import Any

from config import FedArguments
from federated_learning.aggregators._base import ClientAlgorithm
from federated_learning.aggregators._hyperparameters import check_hyperparameters
from federated_learning.aggregators._registry import register
from federated_learning.aggregators.fedavg import FedAvg
from federated_learning.types import ClientUpdate, StateDict

logger = logging.getLogger(__name__)

CLUSTER = "cluster"  # the metric a client reports its chosen cluster in
PAYLOAD_PREFIX = "cluster_"  # payload keys of the other clusters: cluster_1 .. cluster_{K-1}


class IfcaClient(ClientAlgorithm):
    """Picks the cluster whose adapter has the lowest loss on its rows, then trains it as FedAvg does."""

    def choose_start(
        self, start: StateDict, payload: Mapping[str, StateDict], loss_of: Callable[[StateDict], float],
        client_id: int, server_round: int, seed: int,
    ) -> tuple[StateDict, dict[str, float]]:
        """Cluster 0 is ``start``, the others come in the payload; the lowest loss wins (ties: seeded draw)."""
        others = sorted((k for k in payload if k.startswith(PAYLOAD_PREFIX)),
                        key=lambda k: int(k[len(PAYLOAD_PREFIX):]))
        candidates = [start, *(payload[k] for k in others)]
        if len(candidates) == 1:
            return start, {CLUSTER: 0}
        losses = [loss_of(state) for state in candidates]
        best = min(losses)
        tied = [j for j, loss in enumerate(losses) if loss == best]
        draw = random.Random(f"ifca/{seed}/{client_id}/{server_round}")
        choice = tied[0] if len(tied) == 1 else draw.choice(tied)
        return candidates[choice], {CLUSTER: choice, **{f"cluster_loss_{j}": loss for j, loss in enumerate(losses)}}


@register
class Ifca(FedAvg):
    """K cluster adapters; each client trains the one that fits it best; FedAvg within each cluster."""

    name = "ifca"
    client_class = IfcaClient
    supports_client_ranks = False
    personal_models = True

    def __init__(self, *, ifca_clusters: int = FedArguments.ifca_clusters) -> None:
        """``ifca_clusters`` K >= 1 (at most the clients sampled per round, checked with the flags)."""
        check_hyperparameters(ifca_clusters=ifca_clusters)
        self.num_clusters = int(ifca_clusters)
        self.clusters: list[StateDict] = []  # allocated at the first round, from the global adapter
        self.assignments: dict[int, int] = {}  # client id -> the cluster it chose last

    def _allocate(self, global_params: StateDict) -> None:
        if not self.clusters:
            self.clusters = [{k: t.clone() for k, t in global_params.items()} for _ in range(self.num_clusters)]
        shapes = {k: tuple(t.shape) for k, t in global_params.items()}
        if any({k: tuple(t.shape) for k, t in c.items()} != shapes for c in self.clusters):
            raise ValueError("the IFCA clusters of the checkpoint do not fit this run's adapter")

    def client_start(self, client_id: int, server_round: int, global_params: StateDict) -> StateDict:
        """Cluster 0; the other clusters go in the payload."""
        self._allocate(global_params)
        return self.clusters[0]

    def client_payload(self, client_id: int) -> dict[str, StateDict]:
        """Clusters 1 .. K-1."""
        return {f"{PAYLOAD_PREFIX}{j}": self.clusters[j] for j in range(1, len(self.clusters))}

    def _cluster_of(self, update: ClientUpdate) -> int | str:
        """The cluster ``update`` names, or why it names none of the K."""
        cluster = update.metrics.get(CLUSTER) if isinstance(update.metrics, Mapping) else None
        whole = isinstance(cluster, Integral) or (isinstance(cluster, float) and cluster.is_integer())
        if isinstance(cluster, bool) or not whole or not 0 <= int(cluster) < self.num_clusters:
            return f"it names cluster {cluster!r}, not one of 0..{self.num_clusters - 1}"
        return int(cluster)

    def reply_start(self, update: ClientUpdate, start: StateDict) -> StateDict | str:
        """The adapter of the cluster the reply names; a missing or unknown cluster is refused."""
        cluster = self._cluster_of(update)
        return cluster if isinstance(cluster, str) else self.clusters[cluster]

    def client_model(self, client_id: int) -> StateDict | None:
        """The cluster ``client_id`` chose last (None before it was sampled: then the global adapter)."""
        cluster = self.assignments.get(client_id)
        return None if cluster is None else self.clusters[cluster]

    def aggregate(self, global_params: StateDict, updates: Sequence[ClientUpdate], server_round: int) -> StateDict:
        """FedAvg within each cluster some client chose; return the majority cluster (the loop's global adapter)."""
        self._allocate(global_params)
        members: dict[int, list[ClientUpdate]] = {}
        for update in updates:
            cluster = self._cluster_of(update)
            if isinstance(cluster, str):
                raise ValueError(f"IFCA: client {update.client_id}'s update: {cluster}")
            members.setdefault(cluster, []).append(update)
        for update in updates:
            self.assignments[update.client_id] = int(update.metrics[CLUSTER])
        for cluster, chosen in sorted(members.items()):
            self.clusters[cluster] = super().aggregate(self.clusters[cluster], chosen, server_round)
        logger.info("round %d: IFCA clusters %s", server_round,
                    {j: sorted(u.client_id for u in members.get(j, [])) for j in range(self.num_clusters)})
        empty = sorted(set(range(self.num_clusters)) - set(self.assignments.values()))
        if empty:
            logger.warning("round %d: IFCA clusters %s are no client's choice (yet): every client trained so far "
                           "prefers another", server_round, empty)
        return {k: t.clone() for k, t in self.clusters[self.majority()].items()}

    def majority(self) -> int:
        """The cluster most clients chose last (ties: the lowest index; 0 before any round)."""
        counts = [list(self.assignments.values()).count(j) for j in range(self.num_clusters)]
        return max(range(self.num_clusters), key=lambda j: (counts[j], -j))

    def state_dict(self) -> dict[str, Any]:
        """The K cluster adapters and every client's last cluster (absent before the first round)."""
        if not self.clusters:
            return {}
        return {"clusters": {str(j): c for j, c in enumerate(self.clusters)},
                "assignments": {str(c): j for c, j in self.assignments.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict``'s output; a ValueError when its number of clusters is not ``--ifca_clusters``."""
        if not state:
            return
        clusters = state["clusters"]
        if sorted(clusters, key=int) != [str(j) for j in range(self.num_clusters)]:
            raise ValueError(f"it holds {len(clusters)} IFCA clusters, not --ifca_clusters {self.num_clusters}")
        assignments = {int(c): int(j) for c, j in state.get("assignments", {}).items()}
        if any(not 0 <= j < self.num_clusters for j in assignments.values()):
            raise ValueError("a client's IFCA cluster is out of range")
        self.clusters = [{k: t.clone() for k, t in clusters[str(j)].items()} for j in range(self.num_clusters)]
        self.assignments = assignments
