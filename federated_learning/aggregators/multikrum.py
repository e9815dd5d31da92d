"""Multi-Krum (Blanchard et al., NeurIPS 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", Section 5).

Update: Krum's scores s(i) (``krum``: the sum of client i's squared distances to its n - f - 2
nearest other clients, ``--num_malicious`` f, n > 2f + 2), computed once; the new global is the
unweighted mean of the m = n - f adapters with the lowest scores, x <- (1/m) Σ_{i ∈ best m} y_i
(ties: the clients sampled first). m = n - f leaves out as many clients as may be Byzantine; f = 0
averages every client (the unweighted mean).

Deliberate differences: as ``krum`` (the clients' adapters after local steps; every client counts
once; clients at the global rank). The paper leaves m free (m = 1 is Krum); it is fixed at n - f
here, as in ByzFL (the EPFL library of these rules), over the n replies the round accepted (at
least 1). metrics.jsonl records the chosen clients
and every score (``aggregation``).
"""

from __future__ import annotations

from federated_learning.aggregators._registry import register
from federated_learning.aggregators.krum import Krum


@register
class MultiKrum(Krum):
    """The mean of the n - f client adapters Krum scores best."""

    name = "multikrum"

    def keep(self, n: int) -> int:
        """m = n - f of the ``n`` clients (at least one)."""
        return max(1, n - self.num_malicious)
