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


def joint(concepts) -> Concept:
    """Several concepts as one, for a single-concept fine-tuning method run once on all of them (the baseline rows
    of ANT Tables 2–3, where ESD, AC and FMN erase 100 celebrities or artists together, and of SepME Table 2).

    The prompts interleave the concepts' prompts (first prompt of each concept, then the second, …), so any prefix of
    them — a method drawing a few training images from the cycled prompt list — covers every concept. Anchor
    prompts interleave the same way when every concept's prompts and anchor prompts pair up one to one (AC keeps
    each caption with its anchor); otherwise they are the union of the concepts' anchor prompts (or anchors).
    The name joins the names with ", "; ``label`` is ``None``; ``kind`` is shared or ``"mixed"``.
    """
    concepts = [concepts] if isinstance(concepts, Concept) else list(concepts)
    if not concepts or not all(isinstance(c, Concept) for c in concepts):
        raise ValueError(f"joint() needs a non-empty list of Concepts, got {concepts!r}")
    if len(concepts) == 1:
        return concepts[0]

    def interleave(lists):
        longest = max(len(x) for x in lists)
        return tuple(x[i] for i in range(longest) for x in lists if i < len(x))

    paired = all(c.anchor_prompts and len(c.anchor_prompts) == len(c.prompts) for c in concepts)
    if paired:
        anchor_prompts = interleave([c.anchor_prompts for c in concepts])
    else:
        anchor_prompts = tuple(dict.fromkeys(p for c in concepts
                                             for p in (c.anchor_prompts or ((c.anchor,) if c.anchor.strip() else ()))))
    anchors = {c.anchor for c in concepts}
    kinds = {c.kind for c in concepts}
    return Concept(name=", ".join(c.name for c in concepts), prompts=interleave([c.prompts for c in concepts]),
                   anchor=anchors.pop() if len(anchors) == 1 else "", kind=kinds.pop() if len(kinds) == 1 else "mixed",
                   label=None, anchor_prompts=anchor_prompts)
