"""The ``Concept`` noun: what a method erases, the prompts that name it, and its anchor."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Concept:
    """A concept to erase.

    Attributes:
        name: the concept as written in prompts ("tench", "nudity", "anna adams").
        prompts: prompts that name it (training and evaluation prompts are drawn from these).
        anchor: what the concept is mapped to where a method needs one — the superclass for Sculpting Memory,
            the anchor concept for AC, ``""`` (the empty prompt) for ESD/SepME/ANT.
        kind: the concept family in its world ("object", "style", "unsafe", "identity").
        label: the evaluator label that detects it (world specific; ``None`` if no evaluator applies).
    """

    name: str
    prompts: tuple[str, ...]
    anchor: str = ""
    kind: str = "object"
    label: int | str | None = None
    anchor_prompts: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Concept name must be a non-empty string, got {self.name!r}")
        if isinstance(self.prompts, str):
            raise TypeError(f"Concept {self.name!r}: prompts must be a sequence of strings, not one string")
        prompts = tuple(self.prompts)
        if not prompts:
            raise ValueError(f"Concept {self.name!r} has an empty prompt list")
        bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
        if bad:
            raise ValueError(f"Concept {self.name!r} has empty or non-string prompts: {bad!r}")
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "anchor_prompts", tuple(self.anchor_prompts))
        if not isinstance(self.anchor, str):
            raise TypeError(f"Concept {self.name!r}: anchor must be a string, got {self.anchor!r}")
