"""Tuning and held-out concepts of the mini world — the one place they are declared.

Mini hyperparameters are chosen on the *tuning* concepts (``reports/mini-tuning.md`` names the split each sweep ran
on); verdicts are reported on *held-out* concepts, in several draws (:mod:`unlearnkit.experiments.draws`). The tuning
members are the concepts the notebooks were tuned on before this split existed, so nothing held out here has chosen a
setting. The unsafe family has one member: its held-out part is evaluation seeds instead (``held_out_first_seed``).
Notebook 03's baseline sweeps ran on all ten objects before this split (``reports/mini-tuning.md`` says so), and SM
Tables 1 and 9 erase more classes than are held out: their verdicts read the held-out members of each order.
"""
from __future__ import annotations

from unlearnkit.worlds.mini import catalogue as cat

#: SM Table 2's first three classes (notebook 03's ablations and sweeps) and the three objects SepME's mini preset was
#: measured on (notebook 04's Tables 7-8)
TUNING_OBJECTS = ("tench", "springer", "cassette", "chainsaw", "pump", "truck")
#: notebook 04's three styles and notebook 05's erased styles
TUNING_STYLES = ("vangogh", "picasso", "cezanne", "monet")
#: notebook 05's identity groups were drawn from these first names (every identity named so is tuning)
TUNING_FIRST_NAMES = ("anna", "ben", "clara", "david")
#: held-out evaluation seeds start here: above every seed a notebook or sweep has used (training 0…, evaluation
#: 100…, 5000… and 10000…)
HELD_OUT_FIRST_SEED = 50_000


def split(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tuning, held-out) concept names of ``kind``; for "unsafe" both are ("nudity",) (seeds are held out)."""
    if kind == "object":
        tuning = TUNING_OBJECTS
        names = cat.OBJECTS
    elif kind == "style":
        tuning = TUNING_STYLES
        names = cat.STYLES
    elif kind == "identity":
        tuning = tuple(n for n in cat.IDENTITIES if n.split()[0] in TUNING_FIRST_NAMES)
        names = cat.IDENTITIES
    elif kind == "unsafe":
        return ("nudity",), ("nudity",)
    else:
        raise ValueError(f"kind must be one of ('object', 'style', 'identity', 'unsafe'), got {kind!r}")
    return tuple(tuning), tuple(n for n in names if n not in tuning)
