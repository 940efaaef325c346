"""The registry of erasers: :data:`MODULES` lists the method modules, each declaring ``METHODS`` (the contract in
:mod:`unlearnkit.methods.contract`); everything else here is derived from those declarations.

Adding an eraser is one new module with ``METHODS = (Method(...),)`` and its name in :data:`MODULES`. The CLI, the
benchmarks and the notebooks reach methods only through :func:`erase`, :func:`get` and :func:`check_hyperparameters`.
"""
from __future__ import annotations

import copy
import importlib
from functools import lru_cache

from unlearnkit.core.errors import UnlearnkitError
from unlearnkit.methods.contract import INFERENCE, Erasure, Method, concept_list

__all__ = ["MODULES", "Erasure", "Method", "registry", "get", "names", "label", "descriptions", "erase", "erase_many",
           "check_hyperparameters", "coerce_hyperparameters", "with_sampler"]

#: the method modules, in table order: a name here is ``unlearnkit.methods.<name>``, a dotted path any module
MODULES = ("ant", "esd", "ablating", "salun", "uce", "fmn", "sepme", "mace", "sculpting", "sld")


@lru_cache(maxsize=None)
def _load(modules: tuple[str, ...]) -> dict[str, Method]:
    methods: dict[str, Method] = {}
    for module_name in modules:
        module = importlib.import_module(module_name if "." in module_name else f"{__name__}.{module_name}")
        declared = getattr(module, "METHODS", None)
        if not declared or not all(isinstance(m, Method) for m in declared):
            raise TypeError(f"{module.__name__} must declare METHODS, a tuple of unlearnkit.methods.contract.Method")
        for method in declared:
            if method.name in methods:
                raise ValueError(f"method name {method.name!r} is declared twice ({module.__name__})")
            methods[method.name] = method
    return methods


def registry() -> dict[str, Method]:
    """Every registered method by name, in :data:`MODULES` order."""
    return dict(_load(tuple(MODULES)))


def get(name: str) -> Method:
    """The method ``name``; unknown names raise a ValueError listing the known ones."""
    methods = _load(tuple(MODULES))
    if name not in methods:
        raise UnlearnkitError(f"unknown method {name!r}; known methods: {sorted(methods)}")
    return methods[name]


def names() -> list[str]:
    return list(_load(tuple(MODULES)))


def label(name: str) -> str:
    """The method's name as the papers' tables write it ("esd-x" -> "ESD-x"); other names are returned as they are."""
    method = _load(tuple(MODULES)).get(name)
    return method.label if method is not None else name


def descriptions() -> dict[str, str]:
    """One line per method (``unlearnkit erase --help``)."""
    return {name: method.description for name, method in _load(tuple(MODULES)).items()}


def coerce_hyperparameters(hyperparameters: dict) -> dict:
    """A copy in which a ``sampler`` given as a dict (``--set sampler={"num_inference_steps": 10}``, presets)
    becomes :class:`~unlearnkit.sampling.SamplerSettings`; a sampler of any other type raises a ValueError."""
    from unlearnkit.sampling import SamplerSettings

    hyperparameters = dict(hyperparameters)
    sampler = hyperparameters.get("sampler")
    if isinstance(sampler, dict):
        try:
            hyperparameters["sampler"] = SamplerSettings(**sampler)
        except TypeError as error:
            raise UnlearnkitError(f"sampler {sampler!r}: {error}") from None
    elif sampler is not None and not isinstance(sampler, SamplerSettings):
        raise UnlearnkitError(f"sampler must be SamplerSettings or a dict of its fields, got {sampler!r}")
    return hyperparameters


def with_sampler(name: str, hyperparameters: dict | None, settings) -> dict:
    """A copy of ``hyperparameters`` in which a method that draws its own training images (``sampler_input``)
    draws them with ``settings`` unless a ``sampler`` is given (the notebooks' shorter sampler on the mini world)."""
    hyperparameters = copy.deepcopy(dict(hyperparameters or {}))
    if get(name).sampler_input and settings is not None:
        hyperparameters.setdefault("sampler", settings)
    return hyperparameters


def _split(method: Method, hyperparameters: dict) -> tuple[dict, dict]:
    """``(config hyperparameters, fit inputs)``: the names of ``fit``'s keyword inputs go to fit."""
    inputs = {k: v for k, v in hyperparameters.items() if k in method.inputs}
    return {k: v for k, v in hyperparameters.items() if k not in inputs}, inputs


def check_hyperparameters(name: str, **hyperparameters):
    """Build the method's full Config from flat ``hyperparameters`` without touching a model (fit inputs such as
    ANT's ``bank`` are accepted and left out); bad names or values raise a ValueError naming them."""
    method = get(name)
    return method.make_config(**_split(method, coerce_hyperparameters(hyperparameters))[0])


def erase(name: str, world, concepts, *, progress: bool = False, **hyperparameters) -> Erasure:
    """Run the method ``name`` on one Concept or a list of them; ``hyperparameters`` build its Config (over the
    paper's defaults) and the names of its fit inputs go to ``fit``. Several concepts go to methods that take
    several (in one fit, on their joint concept, or in sequence); other methods raise a ValueError for them."""
    method = get(name)
    concepts = concept_list(concepts)
    if len(concepts) > 1 and not method.takes_several:
        several = sorted(n for n, m in _load(tuple(MODULES)).items() if m.takes_several)
        raise UnlearnkitError(f"method {name!r} does not erase several concepts in one run (got {len(concepts)}); "
                         f"methods that take several: {several}")
    hyperparameters, inputs = _split(method, coerce_hyperparameters(hyperparameters))
    erasure = method.fit(world, concepts, method.make_config(**hyperparameters), progress=progress, **inputs)
    if not isinstance(erasure, Erasure):
        raise TypeError(f"method {name!r}: fit returned {type(erasure).__name__}, not an Erasure")
    if not erasure.edits and INFERENCE not in method.capabilities:
        raise ValueError(f"method {name!r}: fit returned no Edit")
    return erasure


def erase_many(name: str, world, concepts, *, progress: bool = False, **hyperparameters) -> Erasure:
    """:func:`erase` on a list of concepts, erased at once (the multi-concept baseline rows of ANT Tables 2–3)."""
    return erase(name, world, list(concepts), progress=progress, **hyperparameters)
