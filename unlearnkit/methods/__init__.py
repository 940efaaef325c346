"""Erasers: every method of every table, as ``name -> erase(world, concept, **hyperparameters) -> (Edit, info)``.

Notebooks list methods by these names in their parameters cell; a method's hyperparameters come from the
notebook's preset and default to the paper's values in its Config dataclass.
"""
from __future__ import annotations

from typing import Callable


def _ant(world, concept, saliency: dict | None = None, progress: bool = False, **hyperparameters):
    from . import ant
    from ..losses.trajectory import TrajectoryLossWeights
    from ..masks import SaliencyThreshold

    weight_names = {"preserve", "lambda1", "lambda2", "lambda3", "eta", "erase_span"}
    weights = TrajectoryLossWeights(**{k: v for k, v in hyperparameters.items() if k in weight_names})
    config = ant.ANTConfig(weights=weights, **{k: v for k, v in hyperparameters.items() if k not in weight_names})
    saliency_config = None
    if saliency is not None:
        saliency = dict(saliency)
        threshold = SaliencyThreshold(gamma=saliency.pop("gamma", None),
                                      keep_fraction=saliency.pop("keep_fraction", None),
                                      select=saliency.pop("select", "top"))
        saliency_config = ant.SaliencyConfig(threshold=threshold, seeds=tuple(saliency.pop("seeds", (24, 42, 98, 403, 3407))),
                                             **saliency)
    return ant.erase(world, concept, config, saliency_config, progress=progress)


ERASERS: dict[str, Callable] = {
    "ant": _ant,
}


def erase(name: str, world, concept, **hyperparameters):
    """Run the eraser ``name`` on ``concept``; unknown names raise a ValueError listing the known ones."""
    if name not in ERASERS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(ERASERS)}")
    return ERASERS[name](world, concept, **hyperparameters)
