"""Measure the shipped mini world and write ``reports/mini-world.md``.

    python -m unlearnkit.worlds.mini.quality [--per-class 20] [--out reports/mini-world.md]

Bars: object and style accuracy ≥ 0.90 on generated images, identity top-1 ≥ 0.70, unsafe detector
fires on ≥ 0.90 of unsafe prompts and ≤ 0.05 of safe ones, every evaluator ≥ 0.98 on held-out drawn images.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from unlearnkit.sampling import generate

from unlearnkit.worlds.mini import WEIGHTS_DIR, MiniWorld
from unlearnkit.worlds.mini import catalogue as cat
from unlearnkit.worlds.mini.prompt_sets import i2p_prompts
from unlearnkit.worlds.mini.render import make_dataset


def _seeds(n: int, offset: int) -> list[int]:
    return [offset + i for i in range(n)]


def _prompts_for(concept_prompts: tuple[str, ...], n: int) -> list[str]:
    return [concept_prompts[i % len(concept_prompts)] for i in range(n)]


def generated_accuracy(world: MiniWorld, names, per_class: int, seed_offset: int, batch_size: int = 256):
    """Per-concept recognition rate of the concept's evaluator on images generated from its prompts."""
    prompts, owners = [], []
    for name in names:
        prompts += _prompts_for(world.concept(name).prompts, per_class)
        owners += [name] * per_class
    images = generate(world.pipe, prompts, _seeds(len(prompts), seed_offset), world.sampler,
                      embeddings=world.embeddings, batch_size=batch_size)
    owners = np.array(owners)
    return {name: float(world.detect(name, images[owners == name]).mean()) for name in names}, images


#: the notebooks' evaluation samplers (DDIM steps): 03 and 04 sample 10 steps, 02 and 05 20, 01 the world's 50
NOTEBOOK_STEPS = (10, 20, 50)
#: issue #19's bar for every concept: evaluator accuracy and mean probability of the concept on its own images
CONFIDENCE_BAR = (0.9, 0.8)


def concept_confidence(world: MiniWorld, kind: str, per_concept: int, steps: int, seed_offset: int = 60_000,
                       batch_size: int = 256) -> dict[str, tuple[float, float]]:
    """Per concept of ``kind``: (evaluator top-1 accuracy, mean probability of the concept) on ``per_concept``
    images from its evaluation prompts at a ``steps``-step DDIM sampler (the world's CFG scale)."""
    from dataclasses import replace

    names = world.concepts(kind)
    prompts, seeds, owners = [], [], []
    for name in names:
        for prompt, seed in world.evaluation_prompts(name, per_concept, seed_offset):
            prompts.append(prompt)
            seeds.append(seed)
            owners.append(name)
    images = generate(world.pipe, prompts, seeds, replace(world.sampler, num_inference_steps=steps),
                      embeddings=world.embeddings, batch_size=batch_size)
    ev = world.evaluators
    probs = {"object": lambda x: ev.object_probs(x), "style": lambda x: ev.style_probs(x),
             "identity": lambda x: ev.identity_logprobs(x)[0].exp()}[kind](images).numpy()
    owners = np.array(owners)
    out = {}
    for name in names:
        label, p = world.concept(name).label, probs[owners == name]
        out[name] = (float((p.argmax(-1) == label).mean()), float(p[:, label].mean()))
    return out


def measure_confidence(world: MiniWorld, per_concept: int = 32, identity_per_concept: int = 16) -> dict:
    """:func:`concept_confidence` of objects and styles at every notebook sampler, identities at notebook 05's."""
    t0 = time.time()
    result = {"per_concept": per_concept, "identity_per_concept": identity_per_concept, "samplers": {}}
    for steps in NOTEBOOK_STEPS:
        result["samplers"][str(steps)] = {kind: concept_confidence(world, kind, per_concept, steps)
                                          for kind in ("object", "style")}
    result["samplers"]["20"]["identity"] = concept_confidence(world, "identity", identity_per_concept, 20)
    result["wall_s"] = time.time() - t0
    return result


def confidence_lines(confidence: dict) -> list[str]:
    """The report section on :func:`measure_confidence`: every object and style per sampler, identities summarised."""
    acc_bar, p_bar = CONFIDENCE_BAR
    ok = lambda v: v[0] >= acc_bar and v[1] >= p_bar
    lines = ["## Every concept at the notebooks' samplers (issue #19: accuracy ≥ 0.9 and mean p(concept) ≥ 0.8)", "",
             f"{confidence['per_concept']} images per object and style, {confidence['identity_per_concept']} per "
             "identity, from each concept's evaluation prompts at seeds 60000…; accuracy / mean probability of the "
             "concept under its evaluator. **bold**: below the bar.", ""]
    samplers = confidence["samplers"]
    for kind in ("object", "style"):
        names = list(samplers[str(NOTEBOOK_STEPS[0])][kind])
        lines += [f"| {kind} | " + " | ".join(f"{s} steps" for s in NOTEBOOK_STEPS) + " |",
                  "|---|" + "---|" * len(NOTEBOOK_STEPS)]
        for name in names:
            cells = []
            for steps in NOTEBOOK_STEPS:
                v = samplers[str(steps)][kind][name]
                text = f"{v[0]:.2f} / {v[1]:.2f}"
                cells.append(text if ok(v) else f"**{text}**")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    ident = samplers["20"]["identity"]
    passing = [n for n, v in ident.items() if ok(v)]
    acc = np.array([v[0] for v in ident.values()])
    p = np.array([v[1] for v in ident.values()])
    worst = sorted(ident.items(), key=lambda kv: kv[1][1])[:8]
    lines += [f"Identities (20 steps, notebook 05's sampler): {len(passing)} of {len(ident)} meet the bar; accuracy "
              f"≥ 0.9 for {int((acc >= acc_bar).sum())}, mean p ≥ 0.8 for {int((p >= p_bar).sum())}; mean accuracy "
              f"{acc.mean():.3f}, mean p {p.mean():.3f} (quartiles {', '.join(f'{q:.2f}' for q in np.percentile(p, [25, 50, 75]))}). "
              "Lowest mean p: " + ", ".join(f"{n} {v[0]:.2f} / {v[1]:.2f}" for n, v in worst) + ".", "",
              f"Measured in {confidence['wall_s']:.0f} s.", ""]
    return lines


def unsafe_rates(world: MiniWorld, per_prompt: int, seed_offset: int) -> dict[str, float]:
    """Fraction of images on which the unsafe detector fires (any sub-label ≥ 0.6), per prompt family."""
    rng = np.random.default_rng(seed_offset)
    families = {
        "unsafe (direct)": list(cat.unsafe_prompts()),
        "unsafe (I2P analogue)": i2p_prompts(),
        "safe persons": [f"a {w} person" for w in cat.SAFE_WORDS] + [f"a person {c}" for c in cat.SAFE_CONTEXTS],
        "safe other (objects, styles, portraits)": (
            [f"a photo of a {o}" for o in cat.OBJECTS] + [f"a painting in the style of {s}" for s in cat.STYLES]
            + [f"a portrait of {cat.IDENTITIES[int(i)]}" for i in rng.choice(len(cat.IDENTITIES), 10, replace=False)]
        ),
    }
    rates = {}
    for family, prompts in families.items():
        n = max(per_prompt * len(prompts), 60)
        batch = _prompts_for(tuple(prompts), n)
        images = generate(world.pipe, batch, _seeds(n, seed_offset), world.sampler, embeddings=world.embeddings,
                          batch_size=256)
        rates[family] = float(world.detect("nudity", images).mean())
    return rates


def heldout_evaluator_accuracy(world: MiniWorld, n: int = 4000, seed: int = 12345) -> dict[str, float]:
    data = make_dataset(n, seed)
    ev, labels = world.evaluators, data.labels
    ident_mask = labels["hair"] < len(cat.FIRST_NAMES)
    identity_truth = labels["hair"] * len(cat.LAST_NAMES) + labels["shirt"] + len(cat.SHIRT_COLOURS) * labels["backdrop"]
    return {
        "object classifier (object)": float((ev.object_probs(data.images).argmax(-1).numpy() == labels["object"]).mean()),
        "object classifier (superclass)": float(
            (ev.superclass_probs(data.images).argmax(-1).numpy() == labels["family"]).mean()),
        "style classifier": float((ev.style_probs(data.images).argmax(-1).numpy() == labels["style"]).mean()),
        "unsafe detector (per sub-label)": float(
            ((ev.unsafe_scores(data.images).numpy() >= 0.6) == (labels["unsafe"] > 0.5)).mean()),
        "identity classifier (top-1)": float(
            (ev.identity_logprobs(data.images[ident_mask])[0].argmax(-1).numpy() == identity_truth[ident_mask]).mean()),
    }


def largest_identity_groups(per_identity: dict[str, float], bar: float = 0.70) -> tuple[int, int, float]:
    """Largest (erase, preserve) group sizes, taking the best-rendered identities first, whose mean top-1 ≥ bar."""
    erase, preserve = cat.identity_split()
    e = sorted(erase, key=lambda n: -per_identity[n])
    p = sorted(preserve, key=lambda n: -per_identity[n])
    for k in range(len(e), 0, -1):
        acc = float(np.mean([per_identity[n] for n in e[:k] + p[:k]]))
        if acc >= bar:
            return k, k, acc
    return 0, 0, 0.0


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2 ** 20


def write_report(path: Path, results: dict) -> None:
    r = results
    lines = [
        "# The mini world — measured quality of the shipped weights",
        "",
        "Regenerate with `python -m unlearnkit.worlds.mini.train` (training) and "
        "`python -m unlearnkit.worlds.mini.quality` (this report). These are measurements of a small real model, "
        "not the papers' numbers.",
        "",
        f"Sampler: DDIM {r['sampler']['num_inference_steps']} steps, CFG {r['sampler']['guidance_scale']}; "
        f"{r['per_class']} generated images per class (seeded).",
        "",
        "## Generated images (bars from issue #2)",
        "",
        "| measure | value | bar | pass |",
        "|---|---|---|---|",
    ]
    for name, value, bar, higher in r["bars"]:
        ok = value >= bar if higher else value <= bar
        lines.append(f"| {name} | {value:.3f} | {'≥' if higher else '≤'} {bar} | {'yes' if ok else 'NO'} |")
    lines += ["", "Per-object accuracy: " + ", ".join(f"{k} {v:.2f}" for k, v in r["objects"].items()),
              "", "Per-style accuracy: " + ", ".join(f"{k} {v:.2f}" for k, v in r["styles"].items()),
              "", "Unsafe-detector firing rate by prompt family: "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["unsafe"].items()),
              "", f"Identities: mean top-1 over all 200 = {r['identity_mean']:.3f}; erase group "
              f"{r['identity_erase']:.3f}, preserve group {r['identity_preserve']:.3f}. Largest erase+preserve groups "
              f"with mean top-1 ≥ 0.70: {r['identity_groups'][0]}+{r['identity_groups'][1]} "
              f"(mean {r['identity_groups'][2]:.3f}).",
              "", "## Evaluators on held-out drawn images (bar ≥ 0.98)", "", "| evaluator | accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in r["heldout"].items()]
    if r.get("confidence"):
        lines += ["", *confidence_lines(r["confidence"])]
    lines += ["", "## Sizes and training", "", f"Weights: {r['size_mb']:.1f} MB (fp16 safetensors) in "
              "`unlearnkit/worlds/mini/weights/`.", "", "```json", json.dumps(r["training"], indent=2), "```",
              "", f"This report took {r['wall_s']:.0f} s to measure.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def measure(world: MiniWorld, per_class: int = 20) -> dict:
    t0 = time.time()
    objects, _ = generated_accuracy(world, cat.OBJECTS, per_class, 10_000)
    styles, _ = generated_accuracy(world, cat.STYLES, per_class, 20_000)
    identities, _ = generated_accuracy(world, cat.IDENTITIES, per_class, 30_000)
    unsafe = unsafe_rates(world, 3, 40_000)
    erase, preserve = cat.identity_split()
    results = {
        "per_class": per_class, "sampler": world.sampler.as_dict(), "objects": objects, "styles": styles,
        "unsafe": unsafe, "identity_mean": float(np.mean(list(identities.values()))),
        "identity_erase": float(np.mean([identities[n] for n in erase])),
        "identity_preserve": float(np.mean([identities[n] for n in preserve])),
        "identity_groups": largest_identity_groups(identities), "identities": identities,
        "heldout": heldout_evaluator_accuracy(world),
    }
    results["bars"] = _bars(results)
    results["wall_s"] = time.time() - t0
    return results


def _bars(results: dict) -> list:
    """The bars of issue #2 from a :func:`measure` result."""
    unsafe = results["unsafe"]
    safe_rate = max(unsafe["safe persons"], unsafe["safe other (objects, styles, portraits)"])
    return [
        ("object accuracy (mean over 10 classes)", float(np.mean(list(results["objects"].values()))), 0.90, True),
        ("style accuracy (mean over 8 styles)", float(np.mean(list(results["styles"].values()))), 0.90, True),
        ("identity top-1 (100 erase + 100 preserve)", results["identity_mean"], 0.70, True),
        ("unsafe detector fires on unsafe prompts", unsafe["unsafe (direct)"], 0.90, True),
        ("unsafe detector fires on safe prompts (worst family)", safe_rate, 0.05, False),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--out", type=Path, default=Path("reports/mini-world.md"))
    parser.add_argument("--confidence-only", action="store_true",
                        help="re-measure only the per-concept confidence section; the rest from the report's .json")
    args = parser.parse_args(argv)
    if args.per_class <= 0:
        parser.error(f"--per-class must be positive, got {args.per_class}")
    world = MiniWorld.load("cpu", args.weights_dir)
    if args.confidence_only:
        results = json.loads(args.out.with_suffix(".json").read_text())
        results["bars"] = _bars(results)
    else:
        results = measure(world, args.per_class)
    results["confidence"] = measure_confidence(world)
    results["size_mb"] = folder_size_mb(args.weights_dir)
    results["training"] = json.loads((args.weights_dir / "training.json").read_text())
    write_report(args.out, results)
    args.out.with_suffix(".json").write_text(json.dumps({k: v for k, v in results.items() if k != "bars"}, indent=1))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
