"""Learning-rate schedule across rounds."""

from __future__ import annotations

import math


def cosine_learning_rate(server_round: int, num_rounds: int, initial_lr: float, min_lr: float = 1e-6) -> float:
    """OpenFedLLM's per-round cosine: ``initial_lr`` at round 0 decaying towards ``min_lr``.

    lr_r = min_lr + (initial_lr - min_lr) * (1 + cos(pi * r / R)) / 2, with r counted from 0.
    """
    return min_lr + 0.5 * (initial_lr - min_lr) * (1 + math.cos(math.pi * server_round / num_rounds))
