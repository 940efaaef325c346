"""One held-out concept erased alone, per draw — what ``unlearnkit erase --method M --concept C`` gives a user.

Each draw erases one held-out concept of a kind (:func:`unlearnkit.experiments.draws.held_out_draws`) with a method's
settings (training seed ``seed + d``) and measures, beside the original, the erased concept's detection rate and that
of held-out concepts kept beside it (:func:`kept_concepts`), at the draw's held-out seeds, with ``world.detect`` —
the measure of ``unlearnkit evaluate``. Notebooks read the draws as verdicts with intervals
(:func:`single_concept_claims`); ``python -m unlearnkit.experiments.cli_acceptance`` compares the command line with
them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from unlearnkit.core.validation import check_integer

__all__ = ["kept_concepts", "detection_hits", "SingleConceptDraws", "single_concept_draws", "single_concept_claims"]


def kept_concepts(world, kind: str, erased: str, n: int) -> list[str]:
    """``n`` held-out concepts of ``kind`` other than ``erased``: first those sharing its first word (the hard case
    for names, ANT Fig. 7's John Wayne / John Lennon), then others spread over the held-out list."""
    check_integer(n, "n", minimum=1)
    pool = [c for c in world.concept_split(kind).held_out if c != erased]
    first = erased.split()[0]
    named = len(erased.split()) > 1
    shared = [c for c in pool if c.split()[0] == first][: (n + 1) // 2] if named else []
    others = [c for c in pool if not (named and c.split()[0] == first)]
    step = max(1, len(others) // max(n - len(shared), 1))
    return shared + others[::step][: n - len(shared)]


def detection_hits(world, edit, names: Sequence[str], images: int, first_seed: int, sampler,
                   cache_dir: str | Path) -> dict[str, np.ndarray]:
    """Per concept of ``names``: 0/1 per image, ``world.detect`` on the model ``edit``'s ``images`` images of it
    (``world.evaluation_prompts`` from ``first_seed``, the resumable cache) — ``unlearnkit evaluate``'s measure."""
    from unlearnkit.experiments.evaluation import generate_edited

    out = {}
    for name in names:
        prompts, seeds = zip(*world.evaluation_prompts(name, images, first_seed))
        out[name] = np.asarray(world.detect(name, generate_edited(world, edit, prompts, seeds, cache_dir, sampler)),
                               dtype=float)
    return out


@dataclass
class SingleConceptDraws:
    """``concepts[d]``: the concept draw ``d`` erased; ``kept[d]``: those measured beside it; ``samples[d]``: per
    image 0/1 arrays ``erased``, ``kept`` and the original's ``original:erased``, ``original:kept``; ``rows``: the
    table (one row per draw and model)."""

    kind: str
    method: str
    concepts: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0


def single_concept_draws(world, kind: str, method: str, hyperparameters: Mapping, draws: int, images: int,
                         sampler, cache_dir: str | Path, kept: int = 8) -> SingleConceptDraws:
    """``draws`` draws of ``method`` (``hyperparameters``; training images at ``sampler``) erasing one held-out
    ``kind`` concept alone, each measured on ``images`` images a concept (the draw's held-out seeds) of the erased
    concept and ``kept`` others (:func:`kept_concepts`), beside the original model."""
    from unlearnkit import methods as erasers
    from unlearnkit.experiments.draws import evaluation_seeds, held_out_draws
    from unlearnkit.experiments.sequential import _with_seed

    check_integer(images, "images", minimum=1)
    values = erasers.with_sampler(method, dict(hyperparameters), sampler)
    erasers.check_hyperparameters(method, **values)
    result = SingleConceptDraws(kind, method)
    started, rows = time.time(), []
    for d, (name,) in enumerate(held_out_draws(world, kind, 1, draws)):
        others = kept_concepts(world, kind, name, kept)
        first = evaluation_seeds(world, kind, d, 1)[0]

        def hits(edit, names):
            out = list(detection_hits(world, edit, names, images, first, sampler, cache_dir).values())
            return out[0], np.concatenate(out[1:])

        original = hits(None, [name, *others])
        edit = erasers.erase(method, world, world.concept(name), **_with_seed(method, values, d)).total()
        edited = hits(edit, [name, *others])
        result.concepts.append(name)
        result.kept.append(others)
        result.samples.append({"erased": edited[0], "kept": edited[1], "original:erased": original[0],
                               "original:kept": original[1]})
        for model, (e, k) in (("original", original), (erasers.label(method), edited)):
            rows.append({"draw": d, "erased": name, "model": model, "erased acc": e.mean(), "kept acc": k.mean(),
                         "kept / original": k.mean() / max(original[1].mean(), 1e-9),
                         "images (erased / kept)": f"{e.size} / {k.size}"})
    result.rows = pd.DataFrame(rows)
    result.seconds = time.time() - started
    return result


def single_concept_claims(single: SingleConceptDraws, max_erased: float, min_kept_ratio: float) -> dict:
    """On held-out concepts erased one at a time: the erased concept's rate < ``max_erased`` and the kept ones'
    > ``min_kept_ratio`` × the original's (paired images), as :class:`~unlearnkit.reports.verdicts.Verdict` s."""
    from unlearnkit import methods as erasers
    from unlearnkit.reports.verdicts import judge

    label = erasers.label(single.method)
    part = single.rows[single.rows.model == label]
    evidence = ", ".join(f"{r['erased']}: erased {r['erased acc']:.2f}, kept / original {r['kept / original']:.2f}"
                         for _, r in part.iterrows())
    return {
        f"{label} erases a held-out {single.kind} alone (erase --method {single.method}): its accuracy < {max_erased}":
            judge(f"erased acc < {max_erased}", single.samples, lambda m: m["erased"], max_erased, "<", evidence),
        f"{label} keeps the other {single.kind} concepts when it erases one: kept acc > {min_kept_ratio} x original":
            judge(f"kept / original > {min_kept_ratio}", single.samples,
                  lambda m: m["kept"] / max(m["original:kept"], 1e-9), min_kept_ratio, ">", evidence,
                  paired=[["kept", "original:kept"]]),
    }
