"""Sweeps that choose mini settings, run on the *tuning* concepts only (``reports/mini-tuning.md``).

:func:`single_concept_sweep` erases one tuning concept at a time with each candidate setting of a method and
measures it on tuning concepts' images at tuning seeds: the erased concept's detection rate and the kept tuning
concepts' — the quantities the notebooks' held-out "one concept at a time" verdicts read. A held-out concept is
refused, so a setting chosen here has never seen the concepts its verdict is reported on.

    python -m unlearnkit.experiments.tuning --kind object --method esd-x --grid '[{"lr": 2e-4}, {"lr": 1e-3}]' \
        [--erase tench truck] [--images 8] [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from unlearnkit.core.errors import UnlearnkitError

__all__ = ["TUNING_EVAL_SEED", "tuning_concepts", "single_concept_sweep", "choose", "main"]

#: first evaluation seed of the sweeps: below the held-out range, apart from the notebooks' training seeds
TUNING_EVAL_SEED = 20_000


def tuning_concepts(world, kind: str, names: Sequence[str] | None = None) -> list[str]:
    """``names`` (default: every tuning concept of ``kind``), refusing any held-out one."""
    split = world.concept_split(kind)
    chosen = list(names) if names else list(split.tuning)
    held = [c for c in chosen if c not in split.tuning]
    if held:
        raise UnlearnkitError(f"{held} are not tuning {kind} concepts (tuning: {list(split.tuning)[:12]} …); a "
                              f"sweep never sees the held-out concepts")
    return chosen


def single_concept_sweep(world, kind: str, method: str, grid: Sequence[Mapping], erased: Sequence[str] | None = None,
                         kept: Sequence[str] | None = None, images: int = 8, steps: int = 10,
                         first_seed: int = TUNING_EVAL_SEED, cache_dir: str | Path = ".cache/tuning") -> pd.DataFrame:
    """One row per (setting of ``grid``, erased tuning concept): ``method`` at that setting (training images at the
    sweep's sampler) erasing the concept alone — what ``unlearnkit erase --method M --concept C`` runs — scored
    with ``world.detect`` on ``images`` images a concept from ``first_seed`` (``unlearnkit evaluate``'s measure):
    the erased concept's detection rate (``erased acc``) and the ``kept`` tuning concepts' (default: every other
    tuning concept of ``kind``), beside the original's, and the erasure's wall time."""
    from unlearnkit import methods as erasers
    from unlearnkit.experiments.single_concept import detection_hits
    from unlearnkit.sampling import SamplerSettings

    erased = tuning_concepts(world, kind, erased)
    kept_all = tuning_concepts(world, kind, kept)
    sampler = SamplerSettings(num_inference_steps=steps, guidance_scale=world.sampler.guidance_scale)
    grid = [dict(g) for g in grid]
    settings = [erasers.with_sampler(method, g, sampler) for g in grid]
    for values in settings:
        erasers.check_hyperparameters(method, **values)   # every setting validated before the first erasure

    def rates(edit, names):
        return detection_hits(world, edit, names, images, first_seed, sampler, cache_dir)

    original = rates(None, dict.fromkeys([*erased, *kept_all]))
    rows = []
    for setting, values in zip(grid, settings):
        for name in erased:
            others = [k for k in kept_all if k != name]
            started = time.time()
            edit = erasers.erase(method, world, world.concept(name), **values).total()
            seconds = time.time() - started
            hit = rates(edit, [name, *others])
            rows.append({"method": method, "setting": json.dumps(setting, sort_keys=True), "erased": name,
                         "erased acc": hit[name].mean(), "others acc": np.concatenate([hit[k] for k in others]).mean(),
                         "original erased acc": original[name].mean(),
                         "original others acc": np.concatenate([original[k] for k in others]).mean(),
                         "images a concept": images, "kept concepts": len(others), "erase seconds": round(seconds, 1)})
    return pd.DataFrame(rows)


def choose(rows: pd.DataFrame, max_erased: float = 0.15, min_others: float = 0.85) -> pd.DataFrame:
    """Per setting: the mean erased and others accuracy over its erased classes, and ``meets`` when both clear
    notebook 03's bars (erased < ``max_erased``, others > ``min_others``); sorted best first (meets, then the
    margin ``others − erased``)."""
    summary = rows.groupby("setting", sort=False).agg(**{"erased acc": ("erased acc", "mean"),
                                                         "others acc": ("others acc", "mean"),
                                                         "worst erased": ("erased acc", "max"),
                                                         "worst others": ("others acc", "min"),
                                                         "concepts": ("erased", "count")}).reset_index()
    summary["meets"] = (summary["erased acc"] < max_erased) & (summary["others acc"] > min_others)
    summary["margin"] = summary["others acc"] - summary["erased acc"]
    return summary.sort_values(["meets", "margin"], ascending=False).reset_index(drop=True)


def main(argv: Sequence[str] | None = None) -> int:
    from unlearnkit.worlds import load_world

    parser = argparse.ArgumentParser(prog="python -m unlearnkit.experiments.tuning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="object", choices=("object", "style", "identity"))
    parser.add_argument("--method", required=True)
    parser.add_argument("--grid", required=True, help="a JSON list of settings (each merged into --base)")
    parser.add_argument("--base", default="{}", help="JSON settings every grid point starts from")
    parser.add_argument("--erase", nargs="+", help="tuning concepts to erase, one at a time (default: all)")
    parser.add_argument("--kept", nargs="+", help="tuning concepts to keep (default: every other tuning one)")
    parser.add_argument("--images", type=int, default=8, help="images a concept (default 8)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (notebook 03/04's: 10, 05's: 20)")
    parser.add_argument("--out", default="reports/mini/tuning", help="folder of the sweep's CSV")
    parser.add_argument("--cache-dir", default=".cache/tuning")
    args = parser.parse_args(argv)
    try:
        grid, base = json.loads(args.grid), json.loads(args.base)
    except json.JSONDecodeError as error:
        raise UnlearnkitError(f"--grid / --base: not JSON ({error})") from None
    if not isinstance(grid, list) or not grid or not all(isinstance(g, dict) for g in grid) or not isinstance(base, dict):
        raise UnlearnkitError("--grid must be a non-empty JSON list of objects and --base a JSON object")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = load_world("mini")
    rows = single_concept_sweep(world, args.kind, args.method, [_merge(base, g) for g in grid], args.erase,
                                args.kept, args.images, args.steps, cache_dir=args.cache_dir)
    path = out / f"single_{args.kind}_{args.method}.csv"
    if path.exists():
        rows = pd.concat([pd.read_csv(path), rows], ignore_index=True)
    rows.to_csv(path, index=False)
    print(rows.round(3).to_string(index=False))
    print(choose(rows).round(3).to_string(index=False))
    return 0


def _merge(base: Mapping, change: Mapping) -> dict:
    """``base`` updated by ``change``, nested dicts (``fusion``, ``sampler``, ``saliency``) merged key by key."""
    merged = dict(base)
    for key, value in change.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


if __name__ == "__main__":
    raise SystemExit(main())
