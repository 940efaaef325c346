"""Draws of held-out concepts: the repetitions a verdict is measured over (:mod:`unlearnkit.reports.verdicts`).

Draw 0 takes the first held-out concepts in the world's declared order; draw ``d ≥ 1`` a seeded shuffle of the
held-out pool that erases a set no earlier draw erased (while the pool has one left; with exactly enough concepts the
draws differ in order, which matters to sequential erasure). Each draw also gets its own training seed (``seed + d``) and evaluation
seeds (:func:`evaluation_seeds`), from the world's held-out seed range on.
"""
from __future__ import annotations

import numpy as np

from unlearnkit.core.validation import check_integer, check_seed

__all__ = ["held_out_draws", "evaluation_seeds", "describe_draws"]


def held_out_draws(world, kind: str, size: int, n_draws: int, seed: int = 0) -> list[tuple[str, ...]]:
    """``n_draws`` tuples of ``size`` held-out concepts of ``kind`` (``world.concept_split``)."""
    check_integer(size, "size", minimum=1)
    check_integer(n_draws, "n_draws", minimum=1)
    check_seed(seed)
    pool = list(world.concept_split(kind).held_out)
    if size > len(pool):
        raise ValueError(f"a draw of {size} held-out {kind} concepts, but the world holds out only {len(pool)}: {pool}")
    draws = [tuple(pool[:size])]
    for d in range(1, n_draws):
        rng = np.random.default_rng(seed + d)
        for _ in range(100):   # a set no earlier draw erased, when the pool has one left
            candidate = tuple(pool[int(i)] for i in rng.permutation(len(pool))[:size])
            if frozenset(candidate) not in {frozenset(x) for x in draws}:
                break
        draws.append(candidate)
    return draws


def evaluation_seeds(world, kind: str, draw: int, n: int, stride: int = 1000) -> list[int]:
    """``n`` evaluation seeds of draw ``draw``: from the world's held-out seed range, ``stride`` apart per draw."""
    check_integer(draw, "draw", minimum=0)
    check_integer(n, "n", minimum=1)
    if n > stride:
        raise ValueError(f"n={n} seeds a draw overlap the next draw's (stride {stride})")
    first = world.concept_split(kind).held_out_first_seed + stride * draw
    return list(range(first, first + n))


def describe_draws(draws) -> str:
    """``"held out: (a, b) | (c, d)"`` — what ``claims.json`` records as the concepts a verdict was measured on."""
    return "held out: " + " | ".join("(" + ", ".join(d) + ")" for d in draws)


def concept_draws(world, kind: str, given, size: int, n_draws: int, seed: int = 0) -> list[tuple[str, ...]]:
    """The concepts of each draw: ``given`` (a list: the same concepts every draw, only the seeds change) or, when
    ``given`` is None, :func:`held_out_draws` of ``size``."""
    if given is None:
        return held_out_draws(world, kind, size, n_draws, seed)
    check_integer(n_draws, "n_draws", minimum=1)
    return [tuple(given)] * n_draws
