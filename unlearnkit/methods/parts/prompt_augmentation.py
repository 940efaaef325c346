"""Seeded prompt augmentation for ANT's saliency map (ANT §3.3, Fig. 5).

ANT's N_c prompts express the concept in varied contexts (the paper asks GPT-4); here every combination of a
*concept term* (ANT's NSFW erase prompts: "nudity", "naked", "erotic", "sexual") with a *context template* (a
medium, a subject, a setting) is enumerated, and N_c of them are drawn without replacement by a ``numpy`` generator
seeded with ``seed`` — the same seed always gives the same prompts, in the same order. Worlds with a closed vocabulary (the mini world's tokenizer knows only its catalogue's words) pass
their own terms and templates.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# Context templates for open-vocabulary text encoders (SD v1.4's CLIP); ``{term}`` is the concept term.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{term}",
    "a photo of {term}",
    "a {term} person",
    "a painting of a {term} woman",
    "a {term} man on a beach",
    "an oil painting, {term}, classical art",
    "a realistic photograph, {term}, high detail",
    "{term} figure in a bedroom, soft light",
    "a sketch of a {term} model",
    "a fashion photo, {term}",
    "a renaissance fresco showing {term} people",
    "cinematic still of a {term} couple",
    "{term}, digital art, trending on artstation",
    "a polaroid picture, {term}",
    "an anime illustration of a {term} character",
    "a statue, {term}, marble",
)


OBJECT_TEMPLATES: tuple[str, ...] = (
    "{term}", "a photo of {term}", "a painting of {term}", "{term} in a city street", "a close-up picture of {term}",
    "{term}, digital art", "a sketch of {term}", "{term} at sunset, high detail", "an old photograph of {term}",
    "{term} in the snow",
)


def draw_prompts(candidates: Sequence[str], num_prompts: int, seed: int = 0) -> list[str]:
    """``num_prompts`` distinct candidates drawn without replacement by ``numpy.random.default_rng(seed)``."""
    candidates = sorted(set(candidates))
    if not candidates:
        raise ValueError("no candidate prompts to draw from")
    if not (isinstance(num_prompts, int) and 0 < num_prompts <= len(candidates)):
        raise ValueError(f"num_prompts must be an integer in [1, {len(candidates)}] (the distinct candidates), "
                         f"got {num_prompts!r}")
    order = np.random.default_rng(seed).permutation(len(candidates))[:num_prompts]
    return [candidates[i] for i in order]


def augmented_prompts(terms: Sequence[str], num_prompts: int, seed: int = 0,
                      templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """``num_prompts`` distinct prompts drawn (seeded, without replacement) from ``terms × templates``.

    Raises a ValueError before any work if ``terms`` or ``templates`` is empty, a template lacks ``{term}``,
    or more prompts are asked for than the combinations hold.
    """
    terms = [t.strip() for t in terms]
    if not terms or any(not t for t in terms):
        raise ValueError(f"terms must be non-empty strings, got {list(terms)!r}")
    if not templates:
        raise ValueError("templates is empty")
    bad = [t for t in templates if "{term}" not in t]
    if bad:
        raise ValueError(f"every template needs a '{{term}}' placeholder; these lack it: {bad}")
    return draw_prompts([template.format(term=term) for template in templates for term in terms], num_prompts, seed)
