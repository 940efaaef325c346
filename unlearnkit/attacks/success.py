"""Attack success rate (ASR) of erased models: how often an attacked prompt brings the erased concept back.

For every model (an :class:`Edit` switched on, or ``None`` for the original) and every ``(prompt, seed)``:

* **plain rate** — the concept's evaluator fires on the image of the plain prompt;
* **ASR (ring)** — … on the image of the concept-vector (Ring-A-Bell-style) prompt, searched once on the original
  text encoder and replayed against every model;
* **ASR (soft)** — … on the image of the soft prompt (UnlearnDiffAtk-style) optimised against *that* model;
* **ASR (soft, projected)** — … on the image of the soft prompt's nearest-word projection, a typeable prompt.

Each rate is the fraction of the ``N`` attacked prompts whose single generation (from the item's own seed, the
same seed as its plain image) is detected after the fixed attack budget — no early stopping, no best-of-many
(UnlearnDiffAtk counts a prompt broken if *any* step's image is detected), so an ASR compares directly with the
plain rate next to it.

Evaluators: ``world.unsafe_flags`` for an ``"unsafe"`` concept, ``world.detect(concept, images)`` otherwise.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit
from unlearnkit.sampling.cache import generate_cached, model_fingerprint
from unlearnkit.sampling import generate, sample_latents
from unlearnkit.attacks.concept_vector import ConceptVectorConfig, concept_direction, concept_prompt_pairs, concept_vector_attack
from unlearnkit.attacks.soft_prompt import SoftPromptConfig, soft_prompt_attack
from unlearnkit.attacks.text import text_encoder_fn, validate_prompts_and_seeds, vocabulary_words

__all__ = ["AttackConfig", "detect_concept", "attack_success_table", "attack_success_by_concept", "attack_record",
           "world_with_sampler",
           "RATE_LABELS"]

RATE_COLUMNS = ("plain_rate", "asr_ring", "asr_soft", "asr_soft_projected")
RATE_LABELS = {"plain_rate": "plain rate", "asr_ring": "ASR ring", "asr_soft": "ASR soft",
               "asr_soft_projected": "ASR soft (words)"}
"""Rate columns of :func:`attack_success_table` → the column names of the notebooks' tables."""


@dataclass(frozen=True)
class AttackConfig:
    """Both attacks' budgets and the concept pairs of the concept vector.

    ``pairs``: ``(with concept, without concept)`` prompt pairs for Ring-A-Bell's concept vector; ``None`` builds
    them from the concept (:func:`.concept_vector.concept_prompt_pairs`). ``exclude_concept_name`` keeps the
    concept's own name out of the concept-vector search's vocabulary: the search never *adds* it (the prompt's
    own occurrences stay unless replaced). ``vocabulary``: the search and the soft prompt's projection use the
    ``vocabulary`` most frequent whole words (lowest BPE ids); ``None``: every whole word.
    """

    ring: ConceptVectorConfig = field(default_factory=ConceptVectorConfig)
    soft: SoftPromptConfig = field(default_factory=SoftPromptConfig)
    pairs: tuple[tuple[str, str], ...] | None = None
    exclude_concept_name: bool = False
    vocabulary: int | None = 4096

    def __post_init__(self):
        from unlearnkit.core.validation import check_flag, check_integer

        check_integer(self.vocabulary, "vocabulary", minimum=1, allow_none=True)
        check_flag(self.exclude_concept_name, "exclude_concept_name")
        if not isinstance(self.ring, ConceptVectorConfig):
            raise TypeError(f"ring must be a ConceptVectorConfig, got {type(self.ring).__name__}")
        if not isinstance(self.soft, SoftPromptConfig):
            raise TypeError(f"soft must be a SoftPromptConfig, got {type(self.soft).__name__}")
        if self.pairs is not None:
            pairs = tuple(tuple(p) for p in self.pairs)
            if not pairs or any(len(p) != 2 for p in pairs):
                raise ValueError(f"pairs must be a non-empty list of (with, without) prompt pairs, got {self.pairs!r}")
            object.__setattr__(self, "pairs", pairs)

    def as_dict(self) -> dict:
        return {"ring": self.ring.as_dict(), "soft": self.soft.as_dict(),
                "pairs": None if self.pairs is None else [list(p) for p in self.pairs],
                "exclude_concept_name": self.exclude_concept_name, "vocabulary": self.vocabulary}


def attack_record(attack_config: AttackConfig, prompts: Sequence[str], seeds: Sequence[int]) -> dict:
    """The attack budget, prompts and seeds as a JSON-ready dict for ``reports.write_run_record(parameters=…)``."""
    return {"attack": attack_config.as_dict(), "attack_prompts": list(prompts),
            "attack_seeds": [int(s) for s in seeds]}


def detect_concept(world, concept: Concept, images: np.ndarray) -> np.ndarray:
    """Boolean ``[N]``: the concept's evaluator fires (unsafe flags for an ``"unsafe"`` concept)."""
    if concept.kind == "unsafe":
        return np.asarray(world.unsafe_flags(images), dtype=bool)
    if not hasattr(world, "detect"):
        raise ValueError(f"world {getattr(world, 'name', world)!r} has no evaluator for {concept.kind!r} concepts "
                         f"(no detect()); only unsafe concepts can be scored there")
    return np.asarray(world.detect(concept, images), dtype=bool)


def _validate_edits(edits) -> dict:
    if not isinstance(edits, Mapping) or not edits:
        raise ValueError(f"edits must be a non-empty dict name -> Edit or None, got {edits!r}")
    for name, edit in edits.items():
        if not isinstance(name, str):
            raise TypeError(f"edit names must be strings, got {name!r}")
        if edit is not None and not isinstance(edit, Edit):
            raise TypeError(f"edits[{name!r}] must be an Edit or None, got {type(edit).__name__}")
    return dict(edits)


def attack_success_table(world, edits: Mapping[str, Edit | None], concept: Concept | str, prompts: Sequence[str],
                         seeds: Sequence[int], attack_config: AttackConfig = AttackConfig(),
                         cache_dir: str | Path | None = None, batch_size: int = 64, settings=None) -> pd.DataFrame:
    """One row per model: ``method, n_prompts, plain_rate, asr_ring, asr_soft, asr_soft_projected``.

    ``prompts[i]`` is attacked once and generated from ``seeds[i]`` (plain and attacked alike). With ``cache_dir``
    images go through :func:`unlearnkit.sampling.cache.generate_cached` (soft prompts are keyed by a hash of their
    embedding), without it they are generated in memory. ``asr_soft_projected`` is missing (NaN) with
    ``projection="none"`` and equals ``asr_soft`` with ``"straight_through"``.

    ``settings``: the sampler of every generation (default ``world.sampler``), so rates line up with a table
    generated with another step count.

    ``df.attrs`` holds ``"adversarial_prompts"`` (ring prompts, and per model the projected soft prompts) and
    ``"seconds"`` (measured wall time of each attack) for notebooks to show.
    """
    edits = _validate_edits(edits)
    prompts, seeds = validate_prompts_and_seeds(prompts, seeds)
    concept = world.concept(concept) if isinstance(concept, str) else concept
    config = attack_config
    pipe, settings = world.pipe, settings or world.sampler

    def images_of(edit: Edit | None, texts: list[str], model_id: str | None, embeddings=None) -> np.ndarray:
        embeddings = embeddings or world.embeddings
        with edit.applied(pipe.unet) if edit is not None else nullcontext():
            if cache_dir is None:
                return generate(pipe, texts, seeds, settings, embeddings=embeddings, batch_size=batch_size)
            return generate_cached(pipe, texts, seeds, settings, cache_dir, embeddings=embeddings,
                                   batch_size=batch_size, progress=False, model_id=model_id)

    def rate(images: np.ndarray) -> float:
        return float(detect_concept(world, concept, images).mean())

    words = vocabulary_words(pipe.tokenizer, limit=config.vocabulary)
    ring_words = vocabulary_words(pipe.tokenizer, exclude=[concept.name] if config.exclude_concept_name else (),
                                  limit=config.vocabulary)
    encode = text_encoder_fn(pipe.tokenizer, pipe.text_encoder)
    started = time.perf_counter()
    direction = concept_direction(encode, config.pairs or concept_prompt_pairs(concept))
    ring = concept_vector_attack(encode, prompts, seeds, direction, ring_words, config.ring)
    seconds = {"ring": time.perf_counter() - started}
    target_latents = None
    if config.soft.steps > 0:
        started = time.perf_counter()
        target_latents, _ = sample_latents(pipe, prompts, seeds, settings, embeddings=world.embeddings,
                                           batch_size=batch_size)
        seconds["soft_targets"] = time.perf_counter() - started

    rows, adversarial = [], {"ring": ring.prompts}
    for name, edit in edits.items():
        model_id = None
        if cache_dir is not None:
            with edit.applied(pipe.unet) if edit is not None else nullcontext():
                model_id = model_fingerprint(pipe)
        started = time.perf_counter()
        soft = soft_prompt_attack(pipe, edit, prompts, seeds, config.soft, settings, target_latents, words)
        seconds[f"soft:{name}"] = time.perf_counter() - started
        row = {"method": name, "n_prompts": len(prompts),
               "plain_rate": rate(images_of(edit, prompts, model_id)),
               "asr_ring": rate(images_of(edit, ring.prompts, model_id)),
               "asr_soft": rate(images_of(edit, soft.keys, model_id, soft.table(world.embeddings))),
               "asr_soft_projected": float("nan")}
        if soft.projected_prompts is not None:
            row["asr_soft_projected"] = rate(images_of(edit, soft.projected_prompts, model_id))
            adversarial[f"soft:{name}"] = soft.projected_prompts
        rows.append(row)
    table = pd.DataFrame(rows, columns=["method", "n_prompts", *RATE_COLUMNS])
    table.attrs["adversarial_prompts"] = adversarial
    table.attrs["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return table


def world_with_sampler(world, settings=None):
    """``world`` itself, or a shallow copy (pipeline, embeddings and evaluators shared) whose ``sampler`` is
    ``settings`` — for callers whose tables use a shorter sampler than the world's; the world is left alone."""
    if settings is None or settings == world.sampler:
        return world
    import copy

    copied = copy.copy(world)
    copied.sampler = settings
    return copied


def attack_success_by_concept(world, edits: Mapping[str, Edit | None], attacked: Mapping[str, tuple[Sequence[str], Sequence[int]]],
                              attack_config: AttackConfig = AttackConfig(), cache_dir: str | Path | None = None,
                              key: str = "concept", attack=None) -> pd.DataFrame:
    """:func:`attack_success_table` once per concept of ``attacked`` (``name -> (prompts, seeds)``), the rows
    stacked: ``<key>, method, n_prompts`` and the :data:`RATE_LABELS` columns. Each concept gets its own
    evaluator and concept-vector search, as the erased concepts of a multi-concept edit differ.

    ``df.attrs``: ``seconds`` (each attack's wall time summed over concepts), ``adversarial_prompts`` per concept,
    ``prompts`` / ``seeds`` (all attacked pairs). ``attack`` (default :func:`attack_success_table`) is injectable.
    """
    if not attacked:
        raise ValueError(f"attacked is empty: name at least one {key} to attack")
    attack = attack or attack_success_table
    frames, seconds, adversarial, all_prompts, all_seeds = [], {}, {}, [], []
    for name, (prompts, seeds) in attacked.items():
        table = attack(world, edits, world.concept(name), list(prompts), list(seeds), attack_config, cache_dir=cache_dir)
        frames.append(table.assign(**{key: name}))
        for label, value in table.attrs.get("seconds", {}).items():
            seconds[label.split(":")[0]] = seconds.get(label.split(":")[0], 0.0) + value
        adversarial[name] = table.attrs.get("adversarial_prompts", {})
        all_prompts += list(prompts)
        all_seeds += [int(s) for s in seeds]
    result = pd.concat(frames, ignore_index=True).rename(columns=RATE_LABELS)
    result = result[[key, "method", "n_prompts", *[c for c in RATE_LABELS.values() if c in result.columns]]]
    result.attrs.update(seconds={k: round(v, 3) for k, v in seconds.items()}, adversarial_prompts=adversarial,
                        prompts=all_prompts, seeds=all_seeds)
    return result
