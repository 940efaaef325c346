"""Does the command line give what the notebooks report? Each held-out concept erased with ``unlearnkit erase
--preset mini`` and measured with ``unlearnkit evaluate`` at its notebook's sampler and held-out seeds, beside the
95 % interval of that notebook's verdict on the same quantity (issue #19's acceptance).

    python -m unlearnkit.experiments.cli_acceptance [--reports reports/mini] [--images 16] [--concepts N] [--only object]

It runs the commands a user types (in this process, through :func:`unlearnkit.cli.main`) and writes
``<reports>/cli_acceptance/cli_acceptance.{md,csv}``: one row per concept and quantity, *within* when the command
line's value lies in the notebook's interval and *consistent* when the value's own 95 % interval (the notebooks'
bootstrap on its one draw: a rate at ``--images`` images reads as a Jeffreys posterior) meets it. A single concept
is noisier than a mean over draws, and a clean 0 of 16 lies below any interval whose draws were not all 0, so
*consistent* is the acceptance reading; a value outside both is a finding to read, not a failed build.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from unlearnkit.core.errors import UnlearnkitError
from unlearnkit.experiments.restoration import SINGLE_INCREMENT_CLAIM

__all__ = ["Check", "CHECKS", "notebook_interval", "compare", "cli_interval", "run_checks", "main"]


@dataclass(frozen=True)
class Check:
    """One family: erase its held-out concepts with ``method`` and compare with ``notebook``'s verdicts —
    ``erased_claim`` (the erased concept's accuracy), ``kept_claim`` (the kept concepts' accuracy, or with
    ``kept_ratio`` its ratio to the original's); ``steps`` is the notebook's evaluation sampler, ``concepts`` how
    many held-out concepts to erase, ``kept`` how many other held-out concepts to measure
    (:func:`~unlearnkit.experiments.single_concept.kept_concepts`; ``None``: those of ``kept_from``, ``"held_out"``
    the other held-out concepts, ``"all"`` every other concept of the kind, as notebook 03 scores every class)."""

    kind: str
    method: str
    notebook: str
    steps: int
    erased_claim: str | None
    kept_claim: str | None
    kept_ratio: bool = False
    concepts: int = 4
    kept: int | None = None
    kept_from: str = "held_out"

    def __post_init__(self):
        from unlearnkit.core.validation import check_choice

        check_choice(self.kept_from, "kept_from", ("held_out", "all"))


CHECKS = (
    Check("object", "ant", "03_sequential_imagenette", 10,
          "ANT erases a held-out class alone: its accuracy < 0.15",
          "ANT keeps the other classes when it erases a held-out one: Others Acc > 0.85", kept_from="all"),
    Check("style", "sepme", "04_sepme_restoration", 10, None, SINGLE_INCREMENT_CLAIM),
    Check("identity", "mace", "05_mass_fusion", 20,
          "MACE erases a held-out identity alone (erase --method mace): its accuracy < 0.1",
          "MACE keeps the other identity concepts when it erases one: kept acc > 0.8 x original", kept_ratio=True,
          concepts=3, kept=8),
)


def notebook_interval(reports: Path, notebook: str, claim: str) -> dict:
    """The recorded verdict on ``claim`` in ``<reports>/<notebook>/claims.json`` (estimate, low, high, outcome)."""
    path = Path(reports) / notebook / "claims.json"
    if not path.is_file():
        raise UnlearnkitError(f"{path} is missing: run `unlearnkit reproduce --preset mini` first")
    for entry in json.loads(path.read_text(encoding="utf-8")):
        if entry.get("claim") == claim and entry.get("low") is not None:
            return entry
    raise UnlearnkitError(f"{path}: no verdict with an interval on {claim!r}")


def compare(value: float, verdict: dict, interval: tuple[float, float] | None = None) -> dict:
    """A row: the command line's ``value`` (and its own 95 % ``interval``) beside the verdict's interval: ``within``
    when low ≤ value ≤ high, ``consistent`` when the two intervals meet (without ``interval``: as ``within``)."""
    low, high = verdict["low"] - 1e-9, verdict["high"] + 1e-9
    own = (value, value) if interval is None else interval
    return {"CLI": round(float(value), 4), "CLI 95 % interval": f"[{own[0]:.3f}, {own[1]:.3f}]",
            "notebook estimate": round(float(verdict["estimate"]), 4),
            "notebook 95 % interval": f"[{verdict['low']:.3f}, {verdict['high']:.3f}]",
            "notebook verdict": verdict.get("outcome"),
            "within": bool(low <= value <= high), "consistent": bool(own[0] <= high and own[1] >= low)}


def cli_interval(rows: pd.DataFrame, images: int, ratio: bool = False) -> tuple[float, float, float]:
    """(value, low, high) of ``rows``' mean edited detection rate (``ratio``: over the original's), each concept's
    rate read as ``images`` 0/1 outcomes — :func:`~unlearnkit.reports.verdicts.bootstrap_interval` on one draw."""
    from unlearnkit.reports.verdicts import bootstrap_interval, rate_sample

    def pooled(column):
        return np.concatenate([rate_sample(float(r), images) for r in rows[column]])

    value = rows["edited detected"].mean()
    if ratio:
        value = value / max(rows["original detected"].mean(), 1e-9)
        _, low, high = bootstrap_interval([{"edited": pooled("edited detected"),
                                            "original": pooled("original detected")}],
                                          lambda m: m["edited"] / max(m["original"], 1e-9))
    else:
        _, low, high = bootstrap_interval([{"edited": pooled("edited detected")}], lambda m: m["edited"])
    return float(value), float(min(low, value)), float(max(high, value))


def _erase_and_evaluate(world, check: Check, name: str, kept: Sequence[str], images: int, work: Path) -> pd.DataFrame:
    from unlearnkit import cli

    out = work / f"{check.method}-{name.replace(' ', '_')}"
    first_seed = world.concept_split(check.kind).held_out_first_seed
    for argv in (["erase", "--method", check.method, "--concept", name, "--preset", "mini", "--out", str(out)],
                 ["evaluate", str(out / "edit.safetensors"), "--images", str(images), "--captions", "1",
                  "--steps", str(check.steps), "--first-seed", str(first_seed),
                  "--cache-dir", str(work / "generations"), *[a for k in kept for a in ("--kept", k)]]):
        if cli.main(argv) != 0:
            raise UnlearnkitError(f"`unlearnkit {' '.join(argv)}` failed")
    return pd.read_csv(out / "evaluate.csv")


def run_checks(reports: Path, checks: Sequence[Check] = CHECKS, images: int = 16, work: Path | None = None,
               concepts: int | None = None) -> pd.DataFrame:
    """Every row of the acceptance table (see the module docstring); intervals are read before any compute.
    ``concepts`` caps the held-out concepts erased per family (default: each check's own count)."""
    from unlearnkit.experiments.single_concept import kept_concepts
    from unlearnkit.worlds import load_world

    intervals = {(c.notebook, claim): notebook_interval(reports, c.notebook, claim)
                 for c in checks for claim in (c.erased_claim, c.kept_claim) if claim}
    world = load_world("mini")
    work = Path(work or tempfile.mkdtemp(prefix="unlearnkit-cli-acceptance-"))
    rows = []
    for check in checks:
        held = list(world.concept_split(check.kind).held_out)
        count = min(check.concepts, concepts or check.concepts)
        for name in held[::max(1, len(held) // count)][:count]:
            pool = held if check.kept_from == "held_out" else world.concepts(check.kind)
            kept = ([n for n in pool if n != name] if check.kept is None
                    else kept_concepts(world, check.kind, name, check.kept))   # as the notebook's draws keep them
            table = _erase_and_evaluate(world, check, name, kept, images, work)
            erased, kept_rows = table[table.role == "erased"], table[table.role == "kept"]
            base = {"kind": check.kind, "method": check.method, "concept": name, "images a concept": images,
                    "sampler steps": check.steps}
            if check.erased_claim:
                value, low, high = cli_interval(erased, images)
                rows.append({**base, "quantity": "erased acc",
                             **compare(value, intervals[check.notebook, check.erased_claim], (low, high))})
            if check.kept_claim:
                value, low, high = cli_interval(kept_rows, images, check.kept_ratio)
                rows.append({**base, "quantity": "kept acc / original" if check.kept_ratio else "kept acc",
                             "kept concepts": len(kept),
                             **compare(value, intervals[check.notebook, check.kept_claim], (low, high))})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    from unlearnkit import reports as report_writer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=Path, default=Path("reports/mini"), help="the full-scale mini reports")
    parser.add_argument("--images", type=int, default=16, help="evaluation images per concept (default 16)")
    parser.add_argument("--concepts", type=int, help="held-out concepts erased per family (default 4 objects, "
                                                     "4 styles, 3 identities)")
    parser.add_argument("--only", choices=sorted({c.kind for c in CHECKS}), action="append",
                        help="check only this concept family (repeat)")
    args = parser.parse_args(argv)
    for flag, value in (("--images", args.images), ("--concepts", args.concepts)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be positive, got {value}")
    checks = [c for c in CHECKS if not args.only or c.kind in args.only]
    table = run_checks(args.reports, checks, args.images, concepts=args.concepts)
    within, consistent = int(table.within.sum()), int(table.consistent.sum())
    report_writer.write_table(
        table, args.reports / "cli_acceptance", "cli_acceptance",
        regenerates="issue #19 acceptance (the CLI lands within the notebooks' intervals)",
        caption=f"held-out concepts erased with `unlearnkit erase --preset mini` and measured with `unlearnkit "
                f"evaluate` at the notebook's sampler and held-out seeds, {args.images} images a concept (resolution "
                f"1/{args.images}): {consistent} of {len(table)} values consistent with the notebook's 95 % interval "
                f"(their own 95 % intervals meet), {within} of {len(table)} within it")
    print(table.to_string(index=False))
    print(f"{consistent} of {len(table)} consistent with the notebooks' intervals, {within} within them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
