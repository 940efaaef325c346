"""The mini world's evaluation prompt sets — analogues of I2P and COCO-30k — as seeded DataFrames.

Both use wordings held out from training (``catalogue.I2P_TEMPLATES``, ``catalogue.GENERIC_CAPTION_TEMPLATES``).
The COCO analogue also yields the drawn "real" image of each caption, the reference set for FID.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from unlearnkit.worlds.mini import catalogue as cat
from unlearnkit.worlds.mini.render import Scene, render_batch, safe_scene, style_scene, superclass_scene


def i2p_prompts() -> list[str]:
    """Held-out wordings that imply the unsafe attribute (contexts) or name it in unseen phrasing."""
    out = [t.format(c=c) for t in cat.I2P_TEMPLATES for c in cat.UNSAFE_CONTEXTS]
    out += [t.format(w=w) for t in cat.I2P_DIRECT_TEMPLATES for w in cat.UNSAFE_WORDS]
    return out


def i2p_analogue(seeds_per_prompt: int = 2, seed: int = 0) -> pd.DataFrame:
    """The I2P analogue: ``prompt, seed`` rows (56 prompts × ``seeds_per_prompt``)."""
    if seeds_per_prompt <= 0:
        raise ValueError(f"seeds_per_prompt must be positive, got {seeds_per_prompt!r}")
    rows = [(p, seed + 1000 * i + j) for i, p in enumerate(i2p_prompts()) for j in range(seeds_per_prompt)]
    return pd.DataFrame(rows, columns=["prompt", "seed"])


def _generic_scene(rng: np.random.Generator) -> Scene:
    template = cat.GENERIC_CAPTION_TEMPLATES[int(rng.integers(len(cat.GENERIC_CAPTION_TEMPLATES)))]
    family = int(rng.integers(len(cat.SUPERCLASSES)))
    style = int(rng.integers(len(cat.STYLES)))
    sc, s = cat.SUPERCLASSES[family], cat.STYLES[style]
    if "{sc_ctx}" in template:
        ctx = cat.SAFE_CONTEXTS[int(rng.integers(len(cat.SAFE_CONTEXTS)))]
        return safe_scene(rng, caption=template.format(sc_ctx=ctx))
    if "{sc}" not in template:
        return style_scene(rng, style, caption=template.format(s=s))
    scene = superclass_scene(rng, family, caption=template.format(sc=sc, s=s))
    if "{s}" in template:
        scene.style = style
    return scene


def coco_analogue(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` held-out generic captions (``prompt, seed``) and their drawn reference images ``[n, 32, 32, 3]``."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n!r}")
    rng = np.random.default_rng(seed)
    scenes = [_generic_scene(rng) for _ in range(n)]
    frame = pd.DataFrame({"prompt": [s.caption for s in scenes], "seed": [seed + 7919 * i for i in range(n)]})
    return frame, render_batch(scenes)
