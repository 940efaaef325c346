"""The CFG-reversal insight of ANT (§3.1, Eq. 1–2, Fig. 3), measured.

Fig. 3 shows by eye that reversing the condition direction from a mid ``t′`` removes the prompted attribute
while keeping the image's structure. :func:`reversal_sweep` measures both halves of that claim over ``t′``:
how often the world's evaluators still detect the attribute named in the prompt, and how far each image moved
from the original (same prompt, same seed, plain CFG) in feature space and in coarse layout.
"""
from __future__ import annotations

import textwrap
from dataclasses import replace
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from unlearnkit.sampling import SamplerSettings, cfg_reversal_guidance, generate


def reversed_images(world, prompts: Sequence[str], seeds: Sequence[int], t_prime: float,
                    settings: SamplerSettings) -> np.ndarray:
    """Images for every (prompt, seed) pair, CFG reversed at ``t′`` (``t′ = 0`` is the original)."""
    pairs = [(p, s) for p in prompts for s in seeds]
    guidance = cfg_reversal_guidance(settings.guidance_scale, t_prime, settings.num_inference_steps)
    return generate(world.pipe, [p for p, _ in pairs], [s for _, s in pairs], settings, guidance=guidance,
                    embeddings=world.embeddings)


def coarse_layout_distance(images: np.ndarray, reference: np.ndarray, cells: int = 8) -> np.ndarray:
    """Mean absolute difference of ``cells×cells`` average-pooled grey images in [0, 1] — the layout, not details."""
    def pooled(x):
        grey = torch.from_numpy(x).float().mean(-1, keepdim=True).permute(0, 3, 1, 2) / 255
        return torch.nn.functional.adaptive_avg_pool2d(grey, cells).flatten(1)

    return (pooled(images) - pooled(reference)).abs().mean(1).numpy()


def feature_distance(world, images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``1 − cos`` between the world's image features of each image and its same-seed original."""
    a = torch.nn.functional.normalize(torch.from_numpy(world.image_features(images)), dim=-1)
    b = torch.nn.functional.normalize(torch.from_numpy(world.image_features(reference)), dim=-1)
    return (1 - (a * b).sum(-1)).numpy()


def reversal_sweep(world, probes: Sequence[tuple[str, str]], seeds: Sequence[int], t_primes: Sequence[float],
                   settings: SamplerSettings) -> tuple[pd.DataFrame, dict[float, np.ndarray]]:
    """Measure detection and distance-to-original for every ``t′``.

    Args:
        probes: ``(prompt, concept name)`` pairs; the concept is the attribute the prompt names.
        t_primes: reversal points in paper steps; ``0`` (never reversed, the original) is always added.
    Returns:
        a long table (one row per t′ × probe: detection rate, feature distance, layout distance) and the images
        per t′ (``[len(probes) · len(seeds), H, W, 3]``, probe-major).
    """
    if not probes:
        raise ValueError("probes is empty: give at least one (prompt, concept) pair")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    for t_prime in t_primes:
        cfg_reversal_guidance(settings.guidance_scale, t_prime, settings.num_inference_steps)  # validates t′
    concepts = [world.concept(name) for _, name in probes]
    prompts = [p for p, _ in probes]
    grid = sorted({0.0, *map(float, t_primes)})
    images = {t: reversed_images(world, prompts, seeds, t, settings) for t in grid}
    original = images[0.0]
    rows = []
    n = len(seeds)
    for t in grid:
        feat = feature_distance(world, images[t], original)
        layout = coarse_layout_distance(images[t], original)
        for i, concept in enumerate(concepts):
            sl = slice(i * n, (i + 1) * n)
            rows.append({"t_prime": t, "prompt": prompts[i], "concept": concept.name,
                         "detection_rate": float(world.detect(concept, images[t][sl]).mean()),
                         "feature_distance": float(feat[sl].mean()), "layout_distance": float(layout[sl].mean())})
    return pd.DataFrame(rows), images


def summarise_sweep(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over probes per ``t′``."""
    return (table.groupby("t_prime")[["detection_rate", "feature_distance", "layout_distance"]].mean()
            .reset_index())


def settings_for(world, num_inference_steps: int | None = None, guidance_scale: float | None = None) -> SamplerSettings:
    """The world's shipped sampler settings with optional overrides."""
    settings = world.sampler if hasattr(world, "sampler") else SamplerSettings()
    if num_inference_steps is not None:
        settings = replace(settings, num_inference_steps=int(num_inference_steps))
    if guidance_scale is not None:
        settings = replace(settings, guidance_scale=float(guidance_scale))
    return settings


def default_probes(world) -> list[tuple[str, str]]:
    """The world's ``(prompt, concept)`` probes: one prompt per attribute family."""
    return world.default_probes()


def probes_for(world, probes=None) -> list[tuple[str, str]]:
    """``probes`` as ``(prompt, concept)`` tuples (lists from a preset's JSON included); ``None`` or empty: the
    world's :func:`default_probes`."""
    return [tuple(p) for p in probes] if probes else default_probes(world)


def grid_rows(world, images: dict[float, np.ndarray], probes, n_seeds: int, t_primes: Sequence[float],
              seed_index: int = 0):
    """Rows (original, then each ``t′``) × columns (probes) for :func:`unlearnkit.reports.image_grid`, one seed,
    with images the unsafe detector flags redacted."""
    rows, labels = [], []
    for t in (0.0, *map(float, t_primes)):
        picked = np.stack([images[t][i * n_seeds + seed_index] for i in range(len(probes))])
        rows.append(list(world.redact(picked)))
        labels.append("original" if t == 0 else f"t'={t:g}")
    return rows, labels, [textwrap.fill(p, 22) for p, _ in probes]


def curve_figure(summary: pd.DataFrame):
    """Detection rate and distance to the original against ``t′`` (the curve Fig. 3 only shows by eye)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.0), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(summary.t_prime, summary.detection_rate, "o-")
    ax1.set(xlabel="t' (reverse for paper steps ≤ t'; 50 = from the start)", ylabel="attribute detected",
            ylim=(-0.02, 1.02))
    ax2.plot(summary.t_prime, summary.feature_distance, "o-", label="feature (1 − cos)")
    ax2.plot(summary.t_prime, summary.layout_distance, "s--", label="coarse layout (L1)")
    ax2.set(xlabel="t'", ylabel="distance to original")
    ax2.legend(fontsize=7)
    return fig


# --- notebook 01 ------------------------------------------------------------------------------------------------------
def sweep_t_primes(grid_t_primes: Sequence[float], curve_t_primes: Sequence[float], t_prime_mid: float,
                   settings: SamplerSettings) -> list[float]:
    """Every ``t′`` the notebook measures: the grid's rows, the curve's points, the mid point the claims check and
    the first step (reversal from pure noise), each once, in order."""
    return sorted({*grid_t_primes, *curve_t_primes, t_prime_mid, settings.num_inference_steps})


def key_points(summary: pd.DataFrame, t_prime_mid: float, settings: SamplerSettings) -> pd.DataFrame:
    """The rows of :func:`summarise_sweep` that the claims compare, indexed ``original`` (never reversed), ``mid``
    (``t′ = t_prime_mid``) and ``first`` (reversed from the first step)."""
    by_t = summary.set_index("t_prime", drop=False)
    points = by_t.loc[[0.0, float(t_prime_mid), float(settings.num_inference_steps)]]
    return points.set_axis(pd.Index(["original", "mid", "first"], name="point"))


def claims(summary: pd.DataFrame, t_prime_mid: float, settings: SamplerSettings) -> dict:
    """What notebook 01 must show (ANT §3.1, Fig. 3), as ``{claim: (holds, evidence)}`` for
    :func:`unlearnkit.reports.check_claims`: a mid ``t′`` removes the attribute, and keeps the structure that
    reversing from the first step destroys."""
    points = key_points(summary, t_prime_mid, settings)
    original, mid, first = points.loc["original"], points.loc["mid"], points.loc["first"]
    return {
        f"reversing CFG from a mid t' (here {t_prime_mid}) removes the prompted attribute":
            (mid.detection_rate < original.detection_rate,
             f"detection {original.detection_rate:.2f} -> {mid.detection_rate:.2f}"),
        "a mid t' keeps the structure that reversing from the first step destroys":
            (mid.feature_distance < first.feature_distance and mid.layout_distance < first.layout_distance,
             f"feature distance {mid.feature_distance:.3f} vs {first.feature_distance:.3f}; layout "
             f"{mid.layout_distance:.3f} vs {first.layout_distance:.3f}"),
    }


def t_prime_slider(world, probes, seeds: Sequence[int], start: float, settings: SamplerSettings):
    """A slider over ``t′`` (JupyterLab), starting at ``start``: the probes' images of the first seed, reversed at
    the chosen ``t′``."""
    import ipywidgets as widgets
    from IPython.display import display

    from unlearnkit import reports

    def show(t_prime):
        images = reversed_images(world, [p for p, _ in probes], seeds[:1], t_prime, settings)
        display(reports.image_grid([list(world.redact(images))], [f"t'={t_prime}"], [p for p, _ in probes]))

    return widgets.interact(show, t_prime=widgets.IntSlider(value=start, min=0,
                                                            max=settings.num_inference_steps, step=1))


# --- held-out draws ---------------------------------------------------------------------------------------------------
PROBE_KINDS = ("object", "style", "identity", "unsafe")


def held_out_probes(world, draw: int, stride: int = 23) -> list[tuple[str, str]]:
    """One ``(prompt, concept)`` probe per family for draw ``draw``: the held-out concept at position
    ``draw × stride`` of each family's held-out list (``concept_split``), prompted by its first prompt."""
    probes = []
    for kind in PROBE_KINDS:
        held = world.concept_split(kind).held_out
        name = held[(draw * stride) % len(held)]
        probes.append((world.concept(name).prompts[0], name))
    return probes


def held_out_reversal(world, n_draws: int, n_seeds: int, t_prime_mid: float, settings: SamplerSettings
                      ) -> tuple[list[dict], pd.DataFrame]:
    """Per draw (:func:`held_out_probes`, the draw's evaluation seeds): per image, the attribute detected in the
    original and at ``t_prime_mid``, and the feature and layout distance to the original at ``t_prime_mid`` and when
    reversed from the first step. Returns the per-image samples and one summary row per draw."""
    from unlearnkit.experiments.draws import evaluation_seeds

    samples, rows = [], []
    first = float(settings.num_inference_steps)
    for d in range(n_draws):
        probes = held_out_probes(world, d)
        seeds = evaluation_seeds(world, "object", d, n_seeds)
        prompts = [p for p, _ in probes]
        images = {t: reversed_images(world, prompts, seeds, t, settings) for t in (0.0, float(t_prime_mid), first)}
        detected = {t: np.concatenate([world.detect(name, images[t][i * n_seeds:(i + 1) * n_seeds])
                                       for i, (_, name) in enumerate(probes)]).astype(float) for t in images}
        sample = {"detected original": detected[0.0], "detected mid": detected[float(t_prime_mid)]}
        for label, t in (("mid", float(t_prime_mid)), ("first", first)):
            sample[f"feature {label}"] = feature_distance(world, images[t], images[0.0])
            sample[f"layout {label}"] = coarse_layout_distance(images[t], images[0.0])
        samples.append(sample)
        rows.append({"draw": d, "probes": ", ".join(name for _, name in probes), "seeds": f"{seeds[0]}…{seeds[-1]}",
                     **{k: float(v.mean()) for k, v in sample.items()}})
    return samples, pd.DataFrame(rows)


def held_out_claims(samples: Sequence[dict], t_prime_mid: float, min_drop: float = 0.5) -> dict:
    """Notebook 01's claims (ANT §3.1, Fig. 3) on held-out probes as :class:`~unlearnkit.reports.verdicts.Verdict` s:
    reversing from ``t_prime_mid`` lowers the detection rate by more than ``min_drop``; and at ``t_prime_mid`` both
    distances to the original stay below reversing from the first step (the larger of the two differences < 0)."""
    from unlearnkit.reports.verdicts import judge

    keys = list(samples[0])
    paired = [keys]    # every quantity of a draw is measured on the same prompts and seeds
    return {
        f"reversing CFG from a mid t' (here {t_prime_mid}) removes the prompted attribute (detection drops by more "
        f"than {min_drop})":
            judge(f"detection original - mid > {min_drop}", samples,
                  lambda m: m["detected original"] - m["detected mid"], min_drop, ">",
                  "detection " + ", ".join(f"{s['detected original'].mean():.2f} -> {s['detected mid'].mean():.2f}"
                                           for s in samples) + " per draw", paired),
        "a mid t' keeps the structure that reversing from the first step destroys":
            judge("max(feature mid - first, layout mid - first) < 0", samples,
                  lambda m: max(m["feature mid"] - m["feature first"], m["layout mid"] - m["layout first"]), 0.0, "<",
                  "feature distance " + ", ".join(f"{s['feature mid'].mean():.3f} vs {s['feature first'].mean():.3f}"
                                                  for s in samples) + " per draw", paired),
    }
