"""The valid range of every algorithm hyperparameter flag, checked without importing torch.

One rule per flag, used by the algorithms' constructors (the Python API) and by the command line's
up-front checks (``federated_learning.checks``), so a bad value is refused in a fraction of a second,
before anything heavy loads. An algorithm that adds a flag adds its rule here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any


def _number(name: str, value: Any) -> float:
    """``value`` as a finite float; a ValueError naming the flag when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"--{name} must be a finite number, got {value!r}")
    return float(value)


def _at_least(low: float) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not _number(name, value) >= low:
            raise ValueError(f"--{name} must be >= {low:g}, got {value}")

    return check


def _greater_than(low: float) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not _number(name, value) > low:
            raise ValueError(f"--{name} must be > {low:g}, got {value}")

    return check


def _in_unit_interval(name: str, value: Any) -> None:
    if not 0 <= _number(name, value) < 1:
        raise ValueError(f"--{name} must be in [0, 1), got {value}")


def _positive_whole(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"--{name} must be a whole number >= 1, got {value!r}")


def _whole_at_least_zero(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"--{name} must be a whole number >= 0, got {value!r}")


def _below_half(name: str, value: Any) -> None:
    if not 0 <= _number(name, value) < 0.5:
        raise ValueError(f"--{name} must be in [0, 0.5) (a fraction of each side), got {value}")


def _in_open_unit_interval(name: str, value: Any) -> None:
    if not 0 < _number(name, value) < 1:
        raise ValueError(f"--{name} must be in (0, 1), got {value}")


VARIANTS = ("paper", "openfedllm")
"""``--fedopt_variant`` values: the papers' update rules, or OpenFedLLM's own variants."""


def _variant(name: str, value: Any) -> None:
    if value not in VARIANTS:
        raise ValueError(f"--{name} {value!r} is unknown; use one of: {', '.join(VARIANTS)}")


RULES: dict[str, Callable[[str, Any], None]] = {
    "prox_mu": _at_least(0),
    "server_lr": _greater_than(0),
    "server_momentum": _in_unit_interval,
    "fedopt_eta": _greater_than(0),
    "fedopt_tau": _greater_than(0),
    "fedopt_beta1": _in_unit_interval,
    "fedopt_beta2": _in_unit_interval,
    "fedopt_variant": _variant,
    "num_clients": _positive_whole,
    "hetlora_gamma": _in_open_unit_interval,
    "hetlora_lambda": _at_least(0),
    "hetlora_min_rank": _positive_whole,
    "ditto_lambda": _at_least(0),
    "ifca_clusters": _positive_whole,
    "trim_fraction": _below_half,
    "num_malicious": _whole_at_least_zero,
}


KRUM_RULES = ("krum", "multikrum")
"""The ``--fed_alg`` names that need n > 2f + 2 replies a round (``--num_malicious`` f)."""


def krum_min_clients(num_malicious: int) -> int:
    """2f + 3: the fewest clients a Krum round needs (Blanchard et al.'s n > 2f + 2)."""
    return 2 * num_malicious + 3


def trimmed_per_side(n: int, trim_fraction: float) -> int:
    """k = floor(β·n), the values the trimmed mean leaves out at each end of a coordinate's n values (at most
    (n - 1) // 2, so one is always left: the 1e-9 that makes 0.2·5 one keeps a β a hair below 0.5 from trimming
    everything)."""
    return min(math.floor(trim_fraction * n + 1e-9), (n - 1) // 2)


def check_hyperparameters(**values: Any) -> None:
    """Raise a ValueError naming the flag when a value is outside its rule's range."""
    for name, value in values.items():
        RULES[name](name, value)
