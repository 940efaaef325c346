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


def _with_config(module_name: str, config_name: str, **fixed):
    """An eraser that builds ``module.<config_name>(**hyperparameters)`` and calls ``module.fit``."""

    def eraser(world, concept, progress: bool = False, **hyperparameters):
        import importlib

        module = importlib.import_module(f"{__name__}.{module_name}")
        config = getattr(module, config_name)(**{**fixed, **hyperparameters})
        kwargs = {} if module_name == "uce" else {"progress": progress}
        edit, log = module.fit(world, concept, config, **kwargs)
        return edit, {"log": log}

    return eraser


ERASERS: dict[str, Callable] = {
    "ant": _ant,
    "esd-x": _with_config("esd", "ESDConfig", scope="xattn"),
    "esd-u": _with_config("esd", "ESDConfig", scope="non_xattn"),
    "ac": _with_config("ablating", "ACConfig"),
    "salun": _with_config("salun", "SalUnConfig"),
    "uce": _with_config("uce", "UCEConfig"),
    "fmn": _with_config("fmn", "FMNConfig"),
}


def erase(name: str, world, concept, **hyperparameters):
    """Run the eraser ``name`` on ``concept``; unknown names raise a ValueError listing the known ones."""
    if name not in ERASERS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(ERASERS)}")
    return ERASERS[name](world, concept, **hyperparameters)
