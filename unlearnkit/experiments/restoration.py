"""Composition and restoration of per-concept Edits — SepME §4.2.2, Tables 3–5 and 8, for any method.

Given one Edit per concept, the model ``θ + Σ_{i∈S} Δθ_i`` should erase exactly the concepts in ``S``; dropping
``Δθ_i`` should restore concept ``i``. :func:`evaluate_subsets` measures that for all ``2^k`` subsets: per subset,
the accuracy of every concept (the world's detector on images generated from the concept's prompts) and the LPIPS
distance to the original model's images of the same prompt and seed. Because every method returns an Edit, the same
measurement applies to SepME's decoupled increments and to summed single-concept edits of AC, ESD, G-CiRs … (the
"beyond the paper" rows); :func:`refit_per_subset` gives the paper's baseline of re-fine-tuning per subset.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from unlearnkit.core.edits import Edit
from unlearnkit.experiments.evaluation import generate_edited

__all__ = ["all_subsets", "subset_label", "subset_edit", "evaluate_models", "evaluate_subsets",
           "refit_per_subset", "combination_matrix", "combination_figure"]

ORIGINAL = "θ"


def all_subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every subset of ``names`` (as in SepME Table 3: ∅, singles, pairs, …), each in ``names`` order."""
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate concept names: {names!r}")
    return [combo for size in range(len(names) + 1) for combo in combinations(names, size)]


def subset_label(subset: Sequence[str]) -> str:
    """``"θ"`` for the empty subset, else ``"θ+a+b"``."""
    return ORIGINAL if not subset else ORIGINAL + "".join(f"+{n}" for n in subset)


def subset_edit(edits: Mapping[str, Edit], subset: Sequence[str]) -> Edit | None:
    """``Σ_{i∈S} Δθ_i`` (None for the empty subset = the original model)."""
    unknown = [n for n in subset if n not in edits]
    if unknown:
        raise KeyError(f"no edit for {unknown!r}; edits exist for {sorted(edits)}")
    if not subset:
        return None
    total = Edit.total([edits[n] for n in subset])
    total.name = subset_label(subset)
    return total


def _prompts_seeds(prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    return [p for p in prompts for _ in seeds], [s for _ in prompts for s in seeds]


def evaluate_models(world, models: Mapping[tuple[str, ...], Edit | None], concepts: Sequence[str],
                    seeds: Sequence[int], cache_dir: str | Path, settings=None, others: Sequence[str] = (),
                    prompts_of: Callable[[str], Sequence[str]] = lambda name: [name], lpips=None,
                    method: str = "", other_seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Tidy table, one row per (model, evaluated concept): ``method, subset, concept, erased, accuracy, LPIPS, N``.

    ``models`` maps an erased subset to the Edit that erases it. ``concepts`` are evaluated individually;
    ``others`` (concepts never erased) are pooled into one row named ``"others"``. LPIPS compares each image with
    the original model's image of the same prompt and seed (``lpips``: a backend with ``.distances``; None skips).
    ``other_seeds`` (default ``seeds``) are the seeds used for each of the ``others``.
    """
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed per prompt")
    groups = {name: [name] for name in concepts}
    if others:
        groups["others"] = list(others)
    seeds_of = {g: (list(other_seeds) if g == "others" and other_seeds is not None else list(seeds)) for g in groups}
    prompts = {g: _prompts_seeds([p for n in members for p in prompts_of(n)], seeds_of[g])
               for g, members in groups.items()}
    original = {g: generate_edited(world, None, *prompts[g], cache_dir, settings) for g in groups} if lpips else {}
    rows = []
    for subset, edit in models.items():
        for group, members in groups.items():
            prompt_list, seed_list = prompts[group]
            images = generate_edited(world, edit, prompt_list, seed_list, cache_dir, settings)
            per_member = len(images) // len(members)
            hits = np.concatenate([world.detect(m, images[k * per_member:(k + 1) * per_member])
                                   for k, m in enumerate(members)])
            row = {"method": method, "subset": subset_label(subset), "concept": group,
                   "erased": group in subset, "accuracy": float(hits.mean()), "N": int(len(images))}
            if lpips is not None:
                row["LPIPS"] = float(np.mean(lpips.distances(images, original[group])))
            rows.append(row)
    return pd.DataFrame(rows)


def evaluate_subsets(world, edits: Mapping[str, Edit], seeds: Sequence[int], cache_dir: str | Path, settings=None,
                     others: Sequence[str] = (), subsets: Sequence[Sequence[str]] | None = None, **kwargs) -> pd.DataFrame:
    """:func:`evaluate_models` on ``θ + Σ_{i∈S} Δθ_i`` for every subset ``S`` of ``edits`` (default: all ``2^k``)."""
    names = list(edits)
    subsets = all_subsets(names) if subsets is None else [tuple(s) for s in subsets]
    models = {tuple(s): subset_edit(edits, s) for s in subsets}
    return evaluate_models(world, models, names, seeds, cache_dir, settings, others, **kwargs)


def refit_per_subset(fit: Callable[[tuple[str, ...]], Edit], subsets: Sequence[Sequence[str]]) -> dict:
    """The re-fine-tune baseline (SepME Table 3, AbConcept / G-CiRs rows): one fresh fit per non-empty subset."""
    return {tuple(s): (fit(tuple(s)) if s else None) for s in subsets}


def combination_matrix(table: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Subsets × evaluated concepts matrix of ``value`` (one method's rows of an :func:`evaluate_models` table)."""
    order = list(dict.fromkeys(table["subset"]))
    columns = list(dict.fromkeys(table["concept"]))
    return table.pivot(index="subset", columns="concept", values=value).loc[order, columns]


def combination_figure(matrices: Mapping[str, pd.DataFrame], title: str = "accuracy per erased subset") -> Figure:
    """One heat map per method: rows = erased subset, columns = evaluated concept, cells = accuracy."""
    fig = Figure(figsize=(3.2 * len(matrices) + 0.6, 0.35 * max(len(m) for m in matrices.values()) + 1.4),
                 layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (method, matrix) in zip(axes, matrices.items()):
        image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(matrix.shape[0]), matrix.index if ax is axes[0] else [""] * matrix.shape[0], fontsize=7)
        for r in range(matrix.shape[0]):
            for c in range(matrix.shape[1]):
                ax.text(c, r, f"{matrix.iat[r, c]:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(method, fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return fig
