"""Verdicts with intervals: a paper's claim read as holds / fails / inconclusive on several draws.

A *draw* is one repetition of an experiment (its own held-out concepts or order, its own training seed). Each draw
gives per-image samples of the quantities a claim is about (``{"ant": hits, "original": hits}``, 0/1 or real). The
claim is a statistic of their means (``lambda m: m["original"] - m["ant"]``), compared with a threshold.

:func:`bootstrap_interval` draws the 95 % interval in two levels — the draws with replacement, then the images of
each chosen draw — so it widens both with few images per cell and with spread across draws. Within a draw, a rate
(0/1 outcomes) is drawn from its Jeffreys posterior Beta(k + ½, n − k + ½), so 16 of 16 images is not read as
certainty; real-valued samples and *paired* quantities (the same images under two models) are resampled by image.
As with the Jeffreys interval's boundary rule (Brown, Cai & DasGupta, 2001: lower bound 0 at 0 successes, upper 1
at n), the interval is widened, where it must be, to contain the estimate itself.
:func:`judge` reads it: **holds** when the whole interval is on the claimed side of the threshold, **fails** when
the whole interval is on the other side, **inconclusive** otherwise.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from unlearnkit.core.validation import check_choice, check_integer, check_number, check_seed

__all__ = ["Verdict", "bootstrap_interval", "judge", "rate_sample", "OUTCOMES"]

OUTCOMES = ("holds", "fails", "inconclusive")
Draw = Mapping[str, np.ndarray]


def rate_sample(rate: float, n: int) -> np.ndarray:
    """The ``n`` 0/1 outcomes behind a rate measured on ``n`` images (the order of images does not matter to an
    unpaired bootstrap)."""
    check_integer(n, "n", minimum=1)
    check_number(rate, "rate", minimum=0.0, maximum=1.0)
    ones = int(round(rate * n))
    return np.concatenate([np.ones(ones), np.zeros(n - ones)])


def _check_draws(draws: Sequence[Draw]) -> list[dict[str, np.ndarray]]:
    if not draws:
        raise ValueError("no draws: a verdict needs at least one")
    keys = set(draws[0])
    checked = []
    for d, draw in enumerate(draws):
        if set(draw) != keys:
            raise ValueError(f"draw {d} has quantities {sorted(draw)}, draw 0 has {sorted(keys)}")
        arrays = {k: np.asarray(v, dtype=float).ravel() for k, v in draw.items()}
        for k, v in arrays.items():
            if v.size == 0 or not np.isfinite(v).all():
                raise ValueError(f"draw {d}, quantity {k!r}: needs at least one finite sample, got {v.size} samples")
        checked.append(arrays)
    return checked


def bootstrap_interval(draws: Sequence[Draw], statistic: Callable[[Mapping[str, float]], float],
                       level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                       paired: Sequence[Sequence[str]] = ()) -> tuple[float, float, float]:
    """(estimate, low, high): the mean over draws of ``statistic(means of the draw)`` and its two-level bootstrap
    percentile interval. ``paired`` lists groups of quantities measured on the same images (same prompts and seeds,
    e.g. two models), resampled with the same image indices."""
    check_number(level, "level", minimum=0.5, maximum=0.999)
    check_integer(n_boot, "n_boot", minimum=100)
    check_seed(seed)
    arrays = _check_draws(draws)
    groups = [tuple(g) for g in paired]
    for g in groups:
        for draw in arrays:
            if len({draw[k].size for k in g}) != 1:
                raise ValueError(f"paired quantities {g} have different sample counts in one draw")
    grouped = {k for g in groups for k in g}
    units = groups + [(k,) for k in arrays[0] if k not in grouped]

    def value(means: Mapping[str, float]) -> float:
        return float(statistic(means))

    estimate = float(np.mean([value({k: float(v.mean()) for k, v in d.items()}) for d in arrays]))
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        per_draw = []
        for d in rng.integers(0, len(arrays), len(arrays)):
            draw, means = arrays[d], {}
            for unit in units:
                first = draw[unit[0]]
                if len(unit) == 1 and np.isin(first, (0.0, 1.0)).all():   # a rate: Jeffreys, never a point
                    means[unit[0]] = rng.beta(first.sum() + 0.5, first.size - first.sum() + 0.5)
                    continue
                idx = rng.integers(0, first.size, first.size)
                for k in unit:
                    means[k] = float(draw[k][idx].mean())
            per_draw.append(value(means))
        boots[b] = np.mean(per_draw)
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    return estimate, float(min(low, estimate)), float(max(high, estimate))


@dataclass(frozen=True)
class Verdict:
    """One claim's reading: ``outcome`` from the interval [``low``, ``high``] of ``estimate`` against ``threshold``
    (``direction`` ">" : the claim is ``statistic > threshold``; "<": ``statistic < threshold``)."""

    claim: str
    outcome: str
    estimate: float
    low: float
    high: float
    threshold: float
    direction: str
    draws: int
    images: str
    evidence: str

    def __post_init__(self):
        check_choice(self.outcome, "outcome", OUTCOMES)
        check_choice(self.direction, "direction", (">", "<"))

    @property
    def holds(self) -> bool:
        return self.outcome == "holds"

    def interval_text(self) -> str:
        return (f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}] vs {self.direction} {self.threshold:g}; "
                f"{self.draws} draw{'s' if self.draws != 1 else ''}, {self.images}")

    def as_dict(self) -> dict:
        return asdict(self)


def judge(claim: str, draws: Sequence[Draw], statistic: Callable[[Mapping[str, float]], float], threshold: float,
          direction: str = ">", evidence: str = "", paired: Sequence[Sequence[str]] = (), seed: int = 0,
          level: float = 0.95) -> Verdict:
    """The :class:`Verdict` on ``claim`` (``statistic`` ``direction`` ``threshold``) from the draws' samples."""
    check_choice(direction, "direction", (">", "<"))
    check_number(threshold, "threshold")
    estimate, low, high = bootstrap_interval(draws, statistic, level=level, seed=seed, paired=paired)
    if direction == ">":
        outcome = "holds" if low > threshold else "fails" if high <= threshold else "inconclusive"
    else:
        outcome = "holds" if high < threshold else "fails" if low >= threshold else "inconclusive"
    sizes = sorted({int(v.size) for d in _check_draws(draws) for v in d.values()})
    images = f"{sizes[0]} images a cell" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]} images a cell"
    return Verdict(claim, outcome, estimate, low, high, float(threshold), direction, len(draws), images, evidence)
