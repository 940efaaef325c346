"""Erasers: every method of every table, as ``name -> erase(world, concept, **hyperparameters) -> (Edit, info)``.

Notebooks list methods by these names in their parameters cell; a method's hyperparameters come from the
notebook's preset and default to the paper's values in its Config dataclass.
"""
from __future__ import annotations

from typing import Callable


def _ant_configs(saliency: dict | None = None, **hyperparameters):
    """ANTConfig and SaliencyConfig from flat hyperparameters (loss weights by their Eq. (3) names)."""
    from . import ant
    from ..losses.trajectory import TrajectoryLossWeights
    from ..masks import SaliencyThreshold

    weight_names = {"preserve", "lambda1", "lambda2", "lambda3", "eta", "erase_span"}
    weights = TrajectoryLossWeights(**{k: v for k, v in hyperparameters.items() if k in weight_names})
    config = ant.ANTConfig(weights=weights, **{k: v for k, v in hyperparameters.items() if k not in weight_names})
    saliency_config = None
    if saliency is not None:
        saliency = dict(saliency)
        if "seeds" in saliency:
            saliency["seeds"] = tuple(saliency["seeds"])
        if {"gamma", "keep_fraction", "select"} & set(saliency):   # otherwise SaliencyConfig's default threshold
            saliency["threshold"] = SaliencyThreshold(gamma=saliency.pop("gamma", None),
                                                      keep_fraction=saliency.pop("keep_fraction", None),
                                                      select=saliency.pop("select", "top"))
        saliency_config = ant.SaliencyConfig(**saliency)
    return config, saliency_config


def _ant(world, concept, saliency: dict | None = None, progress: bool = False, bank=None, **hyperparameters):
    """``bank``: a frozen-trajectory bank from an earlier run with the same settings (``info["trajectory_bank"]``)."""
    from . import ant

    config, saliency_config = _ant_configs(saliency, **hyperparameters)
    return ant.erase(world, concept, config, saliency_config, progress=progress, bank=bank)


_ant.check = _ant_configs


def _with_config(module_name: str, config_name: str, **fixed):
    """An eraser that builds ``module.<config_name>(**hyperparameters)`` and calls ``module.fit``."""

    def eraser(world, concept, progress: bool = False, **hyperparameters):
        import importlib

        module = importlib.import_module(f"{__name__}.{module_name}")
        config = getattr(module, config_name)(**{**fixed, **hyperparameters})
        kwargs = {} if module_name == "uce" else {"progress": progress}
        edit, log = module.fit(world, concept, config, **kwargs)
        return edit, {"log": log}

    def check(**hyperparameters):
        import importlib

        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, config_name)(**{**fixed, **hyperparameters})

    eraser.check = check
    return eraser


def _sepme(function_name: str):
    """A SepME-family eraser: ``SepMEConfig(**hyperparameters)`` → ``sepme.<function_name>(world, concept, config)``
    (``"sepme"``: the concept's single decoupled increment; ``"gcirs"``: G-CiRs on all cross-attention)."""

    def check(**hyperparameters):
        from . import sepme

        return sepme.SepMEConfig(**hyperparameters)

    def eraser(world, concept, progress: bool = False, **hyperparameters):
        from . import sepme

        edit, log = getattr(sepme, function_name)(world, concept, check(**hyperparameters), progress=progress)
        return edit, {"log": log}

    eraser.check = check
    return eraser


def _mace_configs(objective: str = "ant", fusion: dict | None = None, **hyperparameters):
    """MACEConfig (loss weights by name or an ANT Table 4 config letter) and FusionConfig (ANT Eq. 7)."""
    from . import mace

    return mace.MACEConfig(objective=objective, **hyperparameters), mace.FusionConfig(**(fusion or {}))


def _mace(world, concept, objective: str = "ant", fusion: dict | None = None, preserve_texts=None,
          progress: bool = False, **hyperparameters):
    """Per-concept LoRA(s) + closed-form fusion; ``concept`` may be one Concept or a list (mass erasure)."""
    from . import mace

    config, fusion_config = _mace_configs(objective, fusion, **hyperparameters)
    return mace.erase(world, concept, config, fusion_config, preserve_texts=preserve_texts, progress=progress)


_mace.check = _mace_configs


ERASERS: dict[str, Callable] = {
    "ant": _ant,
    "esd-x": _with_config("esd", "ESDConfig", scope="xattn"),
    "esd-u": _with_config("esd", "ESDConfig", scope="non_xattn"),
    "ac": _with_config("ablating", "ACConfig"),
    "salun": _with_config("salun", "SalUnConfig"),
    "uce": _with_config("uce", "UCEConfig"),
    "fmn": _with_config("fmn", "FMNConfig"),
    "gcirs": _sepme("fit_gcirs_single"),
    "sepme": _sepme("fit"),
    "mace": _mace,
}


def check_hyperparameters(name: str, **hyperparameters):
    """Build the method's config from ``hyperparameters`` without touching a model: bad names or values raise a
    ValueError naming them, before any compute. Returns the config (``None`` if the method has no checker)."""
    if name not in ERASERS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(ERASERS)}")
    check = getattr(ERASERS[name], "check", None)
    if check is None:
        return None
    try:
        return check(**hyperparameters)
    except TypeError as error:  # an unknown keyword: name it
        raise ValueError(f"method {name!r}: bad hyperparameter ({error})") from None


def erase(name: str, world, concept, **hyperparameters):
    """Run the eraser ``name`` on ``concept``; unknown names raise a ValueError listing the known ones."""
    if name not in ERASERS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(ERASERS)}")
    return ERASERS[name](world, concept, **hyperparameters)
