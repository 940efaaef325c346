"""Benchmarks of notebook 05 — ANT Tables 2–4 (many celebrities / artists erased at once by fused LoRAs).

* :func:`identity_groups` — the erased identities and the preserved ones evaluated beside them, always including
  preserved identities that share a first name with an erased one (ANT Fig. 7's John Wayne / John Lennon case);
* :class:`IdentityBenchmark` — Acc_e, Acc_p, H_c, recognisable-face ratio (ANT Table 2 / Table 4), plus FID and
  CLIP on the generic captions;
* :class:`StyleBenchmark` — CLIP_e, CLIP_p, H_a = CLIP_p − CLIP_e, FID and CLIP (ANT Table 3);
* :func:`attack_erased_identities` — attack success rates (not in ANT) on portrait prompts of erased identities.

Images come from :func:`unlearnkit.experiments.evaluation.generate_edited` (the edit is switched on only while sampling).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from unlearnkit.core.edits import Edit
from unlearnkit.experiments.evaluation import generate_edited
from unlearnkit.metrics import compute_fid, feature_statistics, identity_metrics, mean_clip_score
from unlearnkit.metrics.clip_score import erase_preserve_clip

__all__ = ["identity_groups", "IdentityBenchmark", "StyleBenchmark", "portrait_prompt", "attack_erased_identities"]


def portrait_prompt(name: str) -> str:
    """ANT/MACE's evaluation template "a portrait of {celebrity}"."""
    return f"a portrait of {name}"


def identity_groups(erase_group: Sequence[str], preserve_group: Sequence[str], first_names: int = 4,
                    per_first_name: int = 2, other_preserved: int = 4) -> tuple[list[str], list[str]]:
    """(erased, preserved-for-evaluation): ``per_first_name`` identities of each of the first ``first_names``
    first names from the erase group, the same number of *preserved* identities sharing those first names (the
    hard case), and ``other_preserved`` preserved identities with other first names."""
    firsts = list(dict.fromkeys(n.split()[0] for n in erase_group))[:first_names]
    if len(firsts) < first_names:
        raise ValueError(f"the erase group has only {len(firsts)} first names, asked for {first_names}")
    erased, preserved = [], []
    for f in firsts:
        erased += [n for n in erase_group if n.split()[0] == f][:per_first_name]
        preserved += [n for n in preserve_group if n.split()[0] == f][:per_first_name]
    others = [n for n in preserve_group if n.split()[0] not in firsts]
    step = max(1, len(others) // max(other_preserved, 1))
    preserved += others[::step][:other_preserved]
    return erased, preserved


class _Generic:
    """FID and CLIP on the world's generic captions (MS-COCO or its mini analogue)."""

    def __init__(self, world, n_captions: int, cache_dir, settings):
        self.world, self.cache_dir, self.settings = world, Path(cache_dir), settings
        self.frame = world.coco_prompts(n_captions).reset_index(drop=True)
        self.clip = world.clip_scorer()
        reference = world.fid_reference(n_captions)   # None: FID skipped (world.skipped_metrics() says why)
        self.extractor = world.fid_extractor() if reference is not None else None
        self.reference = feature_statistics(reference, self.extractor) if reference is not None else None

    def row(self, edit: Edit | None, sld=None, safety_text: str | None = None) -> dict:
        images = generate_edited(self.world, edit, self.frame.prompt, self.frame.seed, self.cache_dir, self.settings,
                                 sld=sld, safety_text=safety_text)
        row = {"CLIP": mean_clip_score(images, list(self.frame.prompt), self.clip)["CLIP"]}
        row["FID"] = compute_fid(images, self.reference, self.extractor) if self.reference is not None else float("nan")
        return row


class IdentityBenchmark:
    """ANT Table 2 (and Table 4) for one model: portraits of each erased and preserved identity over ``seeds``."""

    def __init__(self, world, erased: Sequence[str], preserved: Sequence[str], seeds: Sequence[int],
                 cache_dir, settings=None, n_captions: int = 0, preserved_seeds: Sequence[int] | None = None):
        self.world, self.cache_dir = world, Path(cache_dir)
        self.settings = settings or world.sampler
        self.erased, self.preserved = list(erased), list(preserved)
        p_seeds = list(preserved_seeds if preserved_seeds is not None else seeds)
        self.e_names = [n for n in self.erased for _ in seeds]
        self.e_seeds = [s for _ in self.erased for s in seeds]
        self.p_names = [n for n in self.preserved for _ in p_seeds]
        self.p_seeds = [s for _ in self.preserved for s in p_seeds]
        self.recogniser = world.identity_recogniser()
        self.generic = _Generic(world, n_captions, cache_dir, self.settings) if n_captions else None

    def images(self, edit: Edit | None, sld=None, safety_text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        gen = lambda names, seeds: generate_edited(self.world, edit, [portrait_prompt(n) for n in names], seeds,
                                                   self.cache_dir, self.settings, sld=sld, safety_text=safety_text)
        return gen(self.e_names, self.e_seeds), gen(self.p_names, self.p_seeds)

    def evaluate(self, name: str, edit: Edit | None, generic: bool = True, sld=None,
                 safety_text: str | None = None) -> tuple[dict, tuple]:
        """One Table 2 row. ``sld`` (an :class:`unlearnkit.sampling.sld.SLDConfig`) samples under SLD, steering away from
        ``safety_text`` (the SLD-M row: the erased names), instead of plain CFG."""
        erased_images, preserved_images = self.images(edit, sld, safety_text)
        row = {"method": name, **identity_metrics(self.recogniser, erased_images, self.e_names, preserved_images,
                                                  self.p_names)}
        if generic and self.generic is not None:
            row.update(self.generic.row(edit, sld, safety_text))
        return row, (erased_images, preserved_images)

    def first_seed_images(self, images: tuple[np.ndarray, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        """The first-seed portrait of each of ``names`` from an :meth:`evaluate` result (for grids)."""
        out = []
        for n in names:
            if n in self.erased:
                out.append(images[0][self.e_names.index(n)])
            else:
                out.append(images[1][self.p_names.index(n)])
        return out


class StyleBenchmark:
    """ANT Table 3 for one model: CLIP score of erased- and preserved-style prompts, H_a, FID and CLIP."""

    def __init__(self, world, erased: Sequence[str], preserved: Sequence[str], seeds: Sequence[int], cache_dir,
                 settings=None, n_captions: int = 0, templates: Sequence[str] = ("a painting in the style of {s}",
                                                                                  "an artwork by {s}")):
        self.world, self.cache_dir = world, Path(cache_dir)
        self.settings = settings or world.sampler
        self.erased, self.preserved = list(erased), list(preserved)

        def prompts(styles):
            return [t.format(s=s) for s in styles for t in templates for _ in seeds], \
                   [sd for _ in styles for _ in templates for sd in seeds]

        (self.e_prompts, self.e_seeds), (self.p_prompts, self.p_seeds) = prompts(self.erased), prompts(self.preserved)
        self.clip = world.clip_scorer()
        self.generic = _Generic(world, n_captions, cache_dir, self.settings) if n_captions else None

    def evaluate(self, name: str, edit: Edit | None, sld=None, safety_text: str | None = None) -> tuple[dict, tuple]:
        """One Table 3 row; ``sld``/``safety_text`` as in :meth:`IdentityBenchmark.evaluate`."""
        e = generate_edited(self.world, edit, self.e_prompts, self.e_seeds, self.cache_dir, self.settings,
                            sld=sld, safety_text=safety_text)
        p = generate_edited(self.world, edit, self.p_prompts, self.p_seeds, self.cache_dir, self.settings,
                            sld=sld, safety_text=safety_text)
        row = {"method": name, **erase_preserve_clip(self.clip.score(e, self.e_prompts),
                                                     self.clip.score(p, self.p_prompts))}
        if self.generic is not None:
            row.update(self.generic.row(edit, sld, safety_text))
        return row, (e, p)


def attack_erased_identities(world, models: Mapping[str, Edit | None], identities: Sequence[str], seeds: Sequence[int],
                             attack_config=None, cache_dir=None, settings=None,
                             attack: Callable | None = None) -> pd.DataFrame:
    """Attack success rates of every model on one portrait prompt per erased identity (not in ANT).

    Identity ``identities[i]`` is attacked through ``"a portrait of {name}"`` generated from ``seeds[i]`` by
    :func:`unlearnkit.attacks.attack_success_table` (one call per identity: the evaluator is that identity's top-1,
    ``world.detect``; the concept-vector prompt is searched once on the original text encoder, the soft prompt is
    optimised against each model). Images use ``settings`` (default: the world's sampler). One row per
    (identity, model): ``identity, method, n_prompts`` and the rates named as in
    :data:`unlearnkit.experiments.sequential.ATTACK_RATES`; ``df.attrs`` holds ``prompts``, ``seeds``, ``seconds`` (summed
    per attack) and ``adversarial_prompts`` (per identity). ``attack`` is injectable for tests.
    """
    from unlearnkit.attacks import AttackConfig
    from unlearnkit.attacks.success import attack_success_by_concept, world_with_sampler

    identities, seeds = list(identities), [int(s) for s in seeds]
    if not identities:
        raise ValueError("identities is empty: name at least one erased identity to attack")
    if len(seeds) != len(identities):
        raise ValueError(f"give one seed per identity: got {len(seeds)} seeds for {len(identities)} identities")
    attacked = {name: ([portrait_prompt(name)], [seed]) for name, seed in zip(identities, seeds)}
    return attack_success_by_concept(world_with_sampler(world, settings), models, attacked, attack_config or AttackConfig(), cache_dir,
                                     key="identity", attack=attack)
