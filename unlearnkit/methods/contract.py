"""The eraser contract: a method module declares ``METHODS = (Method(...), …)``, and every ``fit`` returns an Erasure.

``fit(world, concepts, config, *, progress=False, **inputs) -> Erasure``: ``concepts`` is a list of Concepts, ``config``
an instance of ``Method.config``, and the keyword-only ``inputs`` are the method's run inputs (data generated
earlier, a shared trajectory bank, …), documented on its ``fit``.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping

from unlearnkit.core.concepts import joint
from unlearnkit.core.edits import Edit
from unlearnkit.core.errors import BadTypeError, UnlearnkitError

__all__ = ["ONE", "SEVERAL_NATIVE", "SEVERAL_JOINT", "SEQUENTIAL", "INFERENCE", "CAPABILITIES", "SEVERAL",
           "Erasure", "Method", "listed", "only_concept", "joint_concept", "concept_list"]

ONE = "one"                        # erases one concept per fit
SEVERAL_NATIVE = "several-native"  # erases a list in one fit (one closed form, one fusion, one increment each)
SEVERAL_JOINT = "several-joint"    # a one-concept recipe trained once on core.concepts.joint(concepts)
SEQUENTIAL = "sequential"          # forgets a list in order, one Edit per stage
INFERENCE = "inference"            # no Edit: a guidance applied while sampling (its settings are in info)
CAPABILITIES = frozenset({ONE, SEVERAL_NATIVE, SEVERAL_JOINT, SEQUENTIAL, INFERENCE})
#: capabilities that let a fit take more than one concept
SEVERAL = frozenset({SEVERAL_NATIVE, SEVERAL_JOINT, SEQUENTIAL})


@dataclass
class Erasure:
    """What a fit returns: ``edits`` (one per fit; one per stage or per concept for some methods; none for an
    inference-time method), the training ``log`` (one dict per step) and ``info`` (method specific)."""

    edits: list[Edit]
    log: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.edits = list(self.edits)
        bad = [type(e).__name__ for e in self.edits if not isinstance(e, Edit)]
        if bad:
            raise TypeError(f"Erasure.edits must hold Edit objects, got {bad}")

    @property
    def edit(self) -> Edit:
        """The single Edit; a ValueError when there is none (inference-time) or several (stages, increments)."""
        if len(self.edits) == 1:
            return self.edits[0]
        if not self.edits:
            raise ValueError("this erasure has no Edit: an inference-time method changes sampling, not weights "
                             "(its settings are in info)")
        raise ValueError(f"this erasure has {len(self.edits)} Edits ({', '.join(e.name for e in self.edits)}): "
                         f"read .edits, or .total() for the model with all of them")

    def total(self) -> Edit:
        """The sum of the Edits: the model after every stage / with every concept erased."""
        return Edit.total(self.edits)


@dataclass(frozen=True)
class Method:
    """One eraser as the registry lists it.

    ``defaults``: hyperparameters this name sets before the caller's (ESD-u: ``scope="non_xattn"``).
    ``build_config``: flat hyperparameters → ``config`` where it nests other configs (default ``config(**hp)``).
    ``sampler_input``: the Config's ``sampler`` generates training images (the notebooks pass their sampler).
    ``prepare``: ``prepare(world, concepts, config) -> dict`` of ``fit`` inputs — the data fit would otherwise make
    from the frozen model before training (images, saliency masks, trajectory banks).
    """

    name: str
    label: str
    description: str
    config: type
    capabilities: frozenset
    fit: Callable
    defaults: Mapping = field(default_factory=dict)
    build_config: Callable | None = None
    sampler_input: bool = False
    prepare: Callable | None = None

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.strip() and self.name == self.name.lower()):
            raise ValueError(f"Method name must be a non-empty lower-case string, got {self.name!r}")
        for part in ("label", "description"):
            value = getattr(self, part)
            if not (isinstance(value, str) and value.strip() and "\n" not in value):
                raise ValueError(f"method {self.name!r}: {part} must be one non-empty line, got {value!r}")
        if not (isinstance(self.config, type) and dataclasses.is_dataclass(self.config)):
            raise TypeError(f"method {self.name!r}: config must be a dataclass type, got {self.config!r}")
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        unknown = sorted(self.capabilities - CAPABILITIES)
        if unknown or not self.capabilities:
            raise ValueError(f"method {self.name!r}: capabilities {unknown or '(none)'} are not among "
                             f"{sorted(CAPABILITIES)}")
        if not callable(self.fit):
            raise TypeError(f"method {self.name!r}: fit must be callable")

    @property
    def takes_several(self) -> bool:
        return bool(self.capabilities & SEVERAL)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The run inputs ``fit`` accepts: its keyword-only parameters other than ``progress``."""
        return tuple(name for name, p in inspect.signature(self.fit).parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "progress")

    def make_config(self, **hyperparameters):
        """The full Config from flat hyperparameters (over ``defaults``); bad names or values raise a ValueError
        naming the method."""
        build = self.build_config or self.config
        try:
            return build(**{**self.defaults, **hyperparameters})
        except (TypeError, ValueError) as error:   # an unknown keyword is a TypeError: name it too
            kind = BadTypeError if isinstance(error, BadTypeError) else UnlearnkitError
            raise kind(f"method {self.name!r}: bad hyperparameter ({error})") from None


def concept_list(concepts) -> list:
    """One concept or a sequence of them as a non-empty list of distinct concepts."""
    items = [concepts] if hasattr(concepts, "prompts") else list(concepts)
    if not items:
        raise UnlearnkitError("concepts is empty: give at least one concept to erase")
    names = [getattr(c, "name", c) for c in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UnlearnkitError(f"the concept list repeats {repeated}: list each concept once")
    return items


def listed(concepts, what: str) -> list:
    """``concepts`` as a non-empty list; one bare concept is a :class:`BadTypeError` (a fit takes a list)."""
    if hasattr(concepts, "prompts") or isinstance(concepts, str):
        raise BadTypeError(f"{what}: concepts must be a list of Concepts, got one {type(concepts).__name__} "
                        f"{getattr(concepts, 'name', concepts)!r}: wrap it in a list")
    concepts = list(concepts)
    if not concepts:
        raise UnlearnkitError(f"{what}: concepts is empty: give at least one concept to erase")
    return concepts


def only_concept(concepts, label: str):
    """The one concept of a one-concept method's ``concepts`` (a ValueError for several)."""
    concepts = listed(concepts, label)
    if len(concepts) != 1:
        raise UnlearnkitError(f"{label} erases one concept per fit, got {len(concepts)}: "
                         f"{[getattr(c, 'name', c) for c in concepts]}")
    return concepts[0]


def joint_concept(concepts, label: str):
    """``concepts`` as the one concept a several-joint method trains on (:func:`unlearnkit.core.concepts.joint`)."""
    concepts = listed(concepts, label)
    return concepts[0] if len(concepts) == 1 else joint(concepts)
