"""Name -> class registry behind ``--fed_alg``, and the one place hyperparameters become objects.

Each algorithm is the module of its ``--fed_alg`` name in this package (``fedavg.py`` registers
``fedavg``); helper modules start with an underscore. So the valid names are known without
importing torch (``available_aggregators``), and a mistyped flag is refused at once; the classes
load when one is built. ``--fedopt_variant`` picks a registered variant of the same name
(``_openfedllm.py``), the paper's rule where an algorithm has no other variant.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import FedArguments
from federated_learning.aggregators._hyperparameters import check_hyperparameters

if TYPE_CHECKING:
    from federated_learning.aggregators._base import Aggregator, ClientAlgorithm

PAPER = "paper"
_REGISTRY: dict[tuple[str, str], type[Aggregator]] = {}
LOCAL_ALG = re.compile(r"^local(0|[1-9]\d*)$")
# The flags an algorithm may take, plus the run's --seed (for the algorithms that draw at random: FLoRA).
_FLAG_NAMES = frozenset(f.name for f in dataclasses.fields(FedArguments)) | {"seed"}


def register(cls: type[Aggregator]) -> type[Aggregator]:
    """Class decorator: make ``cls`` available under (``cls.name``, ``cls.variant``)."""
    key = (cls.name, cls.variant)
    if key in _REGISTRY:
        raise ValueError(f"aggregator {cls.name!r} (variant {cls.variant!r}) registered twice")
    _REGISTRY[key] = cls
    return cls


def available_aggregators() -> list[str]:
    """The ``--fed_alg`` names, sorted: one module each in this package (read without importing them), and any
    algorithm registered from elsewhere (a researcher's own file, imported before the run)."""
    folder = str(Path(__file__).parent)
    modules = {info.name for info in pkgutil.iter_modules([folder]) if not info.name.startswith("_")}
    return sorted(modules | {name for name, variant in _REGISTRY if variant == PAPER})


@dataclass(frozen=True)
class FedAlg:
    """``--fed_alg`` resolved once: the registered algorithm, and the one client of ``local<K>``."""

    name: str  # a registered algorithm; "fedavg" for local<K> (one client: its mean is its adapter)
    local_client: int | None = None  # K of local<K>: only this client trains, every round


def resolve_fed_alg(fed_alg: str) -> FedAlg:
    """Resolve ``--fed_alg``; a ValueError names the valid choices when it is unknown."""
    match = LOCAL_ALG.match(fed_alg)
    if match:
        return FedAlg("fedavg", int(match.group(1)))
    if fed_alg not in available_aggregators():
        raise ValueError(
            f"--fed_alg {fed_alg!r} is unknown. Valid: {', '.join(available_aggregators())}, "
            "or local<K> (train only client K, e.g. local0)."
        )
    return FedAlg(fed_alg)


def _import_all() -> None:
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{info.name}")


def aggregator_class(fed_alg: str, variant: str = PAPER) -> type[Aggregator]:
    """The class of ``fed_alg`` (``local<K>``: FedAvg) in ``variant``, or its paper form when it has no other."""
    check_hyperparameters(fedopt_variant=variant)
    name = resolve_fed_alg(fed_alg).name
    _import_all()
    return _REGISTRY.get((name, variant)) or _REGISTRY[(name, PAPER)]


def supporting_client_ranks() -> list[str]:
    """The ``--fed_alg`` names whose aggregation takes clients of lower rank (``--client_lora_ranks``)."""
    _import_all()
    return sorted(name for (name, variant), cls in _REGISTRY.items() if variant == PAPER and cls.supports_client_ranks)


def with_fresh_factors() -> list[str]:
    """The ``--fed_alg`` names whose rounds start clients from new factors (``Aggregator.fresh_factors``)."""
    _import_all()
    return sorted(name for (name, variant), cls in _REGISTRY.items() if variant == PAPER and cls.fresh_factors)


def _keyword_arguments(cls: type, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """The flags ``cls``'s keyword-only constructor takes; flags it does not take are ignored, others refused."""
    unknown = sorted(set(hyperparameters) - _FLAG_NAMES)
    if unknown:
        valid = ", ".join(sorted(_FLAG_NAMES))
        raise TypeError(f"{', '.join(unknown)}: not a federated flag (FedArguments has {valid})")
    taken = inspect.signature(cls.__init__).parameters
    return {name: value for name, value in hyperparameters.items() if name in taken and value is not None}


def get_aggregator(name: str, **hyperparameters: Any) -> Aggregator:
    """Build the server side of ``name`` (``local<K>``: FedAvg) from flag-named hyperparameters.

    Flags the algorithm does not use are ignored (so a whole ``FedArguments`` may be passed);
    ``fedopt_variant`` selects the variant class.
    """
    cls = aggregator_class(name, hyperparameters.get("fedopt_variant") or PAPER)
    return cls(**_keyword_arguments(cls, hyperparameters))


def get_client_algorithm(name: str, **hyperparameters: Any) -> ClientAlgorithm:
    """Build the client side of ``name`` (its trainer hooks) from flag-named hyperparameters."""
    cls = aggregator_class(name, hyperparameters.get("fedopt_variant") or PAPER).client_class
    return cls(**_keyword_arguments(cls, hyperparameters))


def build_aggregator(fed: FedArguments, seed: int = 0) -> Aggregator:
    """The server side of the run's ``--fed_alg`` with its flags and the run's ``--seed``."""
    return get_aggregator(fed.fed_alg, **dataclasses.asdict(fed), seed=seed)


def build_client_algorithm(fed: FedArguments) -> ClientAlgorithm:
    """The client side of the run's ``--fed_alg`` with its flags (what a SuperNode needs, and no more)."""
    return get_client_algorithm(fed.fed_alg, **dataclasses.asdict(fed))
