"""Concept-vector prompt attack in the style of Ring-A-Bell (Tsai et al., ICLR 2024).

Black-box with respect to the erased model: it reads only the **original** text encoder ``f``.

1. *Concept extraction* (Ring-A-Bell §3.2): for prompt pairs that differ only in whether the concept is named,
   ``(P_i⁺, P_i⁻)``, the concept vector is the mean difference of their encodings,

       ĉ = (1/N) Σ_i [ f(P_i⁺) − f(P_i⁻) ]            ([L, d], every token position)

2. *Target* (§3.3): a prompt ``P`` pushed along the concept, ``f̃ = f(P) + η·ĉ``; η sets how hard.
3. *Discrete search*: find a prompt ``P̂`` whose encoding is closest to the target, ``min ‖f(P̂) − f̃‖²``.
   Here (Ring-A-Bell uses a genetic algorithm) the search is a seeded coordinate descent over words: start from
   ``P``'s words plus ``extra_words`` empty slots, visit the slots in a seeded random order and at each visit try
   every candidate word (and the empty word, i.e. deletion) in that slot in one batched encoder call, keeping the
   best substitution if it lowers the distance. One visit is one unit of ``budget``; a budget of 0 returns ``P``.

The adversarial prompts are ordinary strings: computed once, replayed against every model that shares the text
encoder.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from unlearnkit.core.concepts import Concept
from unlearnkit.core.errors import BadTypeError
from unlearnkit.core.validation import check_integer, check_number, check_text
from unlearnkit.attacks.text import Encoder, validate_prompts_and_seeds

__all__ = ["ConceptVectorConfig", "ConceptVectorResult", "concept_prompt_pairs", "concept_direction",
           "concept_vector_attack"]


@dataclass(frozen=True)
class ConceptVectorConfig:
    """Hyperparameters of the concept-vector attack.

    ``eta`` is Ring-A-Bell's η (target ``f(P) + η·ĉ``). ``budget`` counts slot visits of the coordinate search per
    prompt (each visit = one batched encoder call over all candidate words). ``extra_words`` empty slots are
    appended to the prompt so the search can add words, not only swap them. ``exclude_words`` are never inserted
    (e.g. the concept's own name); occurrences already in the prompt stay unless the search replaces them.
    """

    eta: float = 3.0
    budget: int = 12
    extra_words: int = 3
    exclude_words: tuple[str, ...] = ()

    def __post_init__(self):
        check_integer(self.budget, "budget (slot visits per prompt)", minimum=0)
        check_integer(self.extra_words, "extra_words", minimum=0)
        check_number(self.eta, "eta")
        if isinstance(self.exclude_words, str):
            raise BadTypeError(f"exclude_words must be a sequence of words, not one string: {self.exclude_words!r}")
        object.__setattr__(self, "exclude_words", tuple(self.exclude_words))
        for word in self.exclude_words:
            check_text(word, "exclude_words entry")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ConceptVectorResult:
    """Adversarial prompts, one per input prompt, with the search's start and final distances
    ``‖f(P̂) − f̃‖² / (L·d)``."""

    prompts: list[str]
    start_distances: list[float]
    distances: list[float]


# --- concept extraction -----------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return text.replace(",", " , ").split()


def _differ_in_one_word(a: str, b: str) -> bool:
    wa, wb = _words(a), _words(b)
    return len(wa) == len(wb) and sum(x != y for x, y in zip(wa, wb)) == 1


def concept_prompt_pairs(concept: Concept) -> list[tuple[str, str]]:
    """``(with concept, without concept)`` prompt pairs built from a :class:`Concept`.

    Each concept prompt is paired with the first of the concept's ``anchor_prompts`` that has as many words and
    differs in exactly one word ("a photo of a tench" ↔ "a photo of a fish", "a nude person" ↔ "a dressed
    person"); failing that, with the prompt where the concept's name is replaced by its ``anchor``. Prompts with
    neither ("a person in a sauna") are skipped: they give no aligned pair.
    """
    pairs = []
    for prompt in concept.prompts:
        partner = next((a for a in concept.anchor_prompts if _differ_in_one_word(prompt, a)), None)
        if partner is None and concept.name in prompt:
            partner = " ".join(prompt.replace(concept.name, concept.anchor).split())
        if partner is not None and partner != prompt:
            pairs.append((prompt, partner))
    if not pairs:
        raise ValueError(f"concept {concept.name!r}: no prompt has an aligned partner without the concept; pass "
                         f"explicit (with, without) prompt pairs instead")
    return pairs


def concept_direction(encode: Encoder, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """Ring-A-Bell's concept vector ``ĉ = mean_i f(P_i⁺) − f(P_i⁻)``, shape ``[L, d]``."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty: give at least one (with concept, without concept) prompt pair")
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ValueError(f"each pair must be two prompt strings (with, without), got {pair!r}")
    with_concept = encode([p for p, _ in pairs]).float()
    without_concept = encode([q for _, q in pairs]).float()
    return (with_concept - without_concept).mean(0)


# --- discrete search --------------------------------------------------------------------------------------------
def _join(slots: Sequence[str]) -> str:
    return " ".join(w for w in slots if w)


def _search_one(encode: Encoder, prompt: str, target: torch.Tensor, candidates: list[str],
                config: ConceptVectorConfig, seed: int) -> tuple[str, float, float]:
    def distances(texts: list[str]) -> torch.Tensor:
        return (encode(texts).float() - target).pow(2).mean(dim=(1, 2))

    slots = _words(prompt) + [""] * config.extra_words
    start = current = float(distances([prompt])[0])
    rng = np.random.default_rng(seed)
    visits = 0
    while visits < config.budget:
        for position in rng.permutation(len(slots)):
            if visits >= config.budget:
                break
            visits += 1
            options = [w for w in candidates + [""] if w != slots[position]]
            texts = [_join(slots[:position] + [w] + slots[position + 1:]) for w in options]
            found = distances(texts)
            best = int(found.argmin())
            if float(found[best]) < current:
                slots[position], current = options[best], float(found[best])
    return (_join(slots) if config.budget else prompt), start, current


def concept_vector_attack(encode: Encoder, prompts: Sequence[str], seeds: Sequence[int], direction: torch.Tensor,
                          candidate_words: Sequence[str],
                          config: ConceptVectorConfig = ConceptVectorConfig()) -> ConceptVectorResult:
    """Search, for each prompt ``P``, a word sequence whose original-encoder embedding approaches ``f(P) + η·ĉ``.

    Args:
        encode: the **original** text encoder, ``texts -> [B, L, d]`` (e.g. :func:`.text.text_encoder_fn`).
        seeds: one per prompt; it fixes the order in which slots are visited. Same seeds, same prompts.
        direction: ``ĉ`` from :func:`concept_direction`, ``[L, d]``.
        candidate_words: the words the search may write (e.g. :func:`.text.vocabulary_words`); words in
            ``config.exclude_words`` are dropped.
    """
    prompts, seeds = validate_prompts_and_seeds(prompts, seeds)
    excluded = {w.lower() for w in config.exclude_words}
    candidates = list(dict.fromkeys(w for w in candidate_words if w and w.lower() not in excluded))
    if config.budget and not candidates:
        raise ValueError("candidate_words is empty (after exclude_words): the search has no word to try")
    direction = direction.float()
    base = encode(prompts).float()
    if direction.shape != base.shape[1:]:
        raise ValueError(f"direction has shape {tuple(direction.shape)}, the encoder gives {tuple(base.shape[1:])}")
    result = ConceptVectorResult([], [], [])
    for prompt, seed, f_prompt in zip(prompts, seeds, base):
        target = f_prompt + config.eta * direction
        adversarial, start, final = _search_one(encode, prompt, target, candidates, config, seed)
        result.prompts.append(adversarial)
        result.start_distances.append(start)
        result.distances.append(final)
    return result
