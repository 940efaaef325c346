"""Measure a model — the world's model with an Edit switched on, or the original — on the papers' prompt sets.

Generation goes through the resumable cache (:func:`unlearnkit.sampling.cache.generate_cached`); the edit is applied
to the UNet only while its images are generated, so evaluating many methods never copies the model.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from unlearnkit.core.edits import Edit
from unlearnkit.sampling.cache import generate_cached
from unlearnkit.sampling.sld import SLD_SAFETY_CONCEPT, sld_guidance
from unlearnkit.metrics.clip_score import mean_clip_score
from unlearnkit.metrics.fid import compute_fid, feature_statistics
from unlearnkit.metrics.nsfw import nudity_counts
from unlearnkit.reports.redaction import redact_boxes


def generate_edited(world, edit: Edit | None, prompts, seeds, cache_dir: str | Path, settings=None,
                    batch_size: int = 128, sld=None, safety_text: str | None = None) -> np.ndarray:
    """Images of ``world``'s model with ``edit`` applied (``None``: the original), one per (prompt, seed).

    ``sld``: an :class:`unlearnkit.sampling.sld.SLDConfig` — sample under Safe Latent Diffusion's inference-time guidance
    instead of plain CFG (SLD-M rows), steering away from ``safety_text`` (default the world's
    ``sld_safety_concept``, else SLD's own c_S). SLD images are cached too, under keys that name the SLD config
    and ``c_S``.
    """
    context = edit.applied(world.pipe.unet) if edit is not None else nullcontext()
    settings = settings or world.sampler
    guidance = None
    if sld is None:
        if safety_text is not None:
            raise ValueError("safety_text is given without sld: pass sld=SLDConfig() to sample under SLD")
    else:
        if safety_text is None:
            safety_text = getattr(world, "sld_safety_concept", SLD_SAFETY_CONCEPT)   # c_S in the world's words
        if not isinstance(safety_text, str) or not safety_text.strip():
            raise ValueError(f"safety_text must be a non-empty string, got {safety_text!r}")
        guidance = sld_guidance(world.embeddings([safety_text]), sld, settings.guidance_scale)
    with context:
        return generate_cached(world.pipe, list(prompts), list(seeds), settings, cache_dir, guidance=guidance,
                               embeddings=world.embeddings, batch_size=batch_size, progress=False)


def generate_frame(world, edit: Edit | None, frame: pd.DataFrame, cache_dir: str | Path, settings=None,
                   sld=None, safety_text: str | None = None) -> np.ndarray:
    """:func:`generate_edited` over a prompt table (``prompt``, ``seed``); a ``guidance`` column (I2P's own
    evaluation guidance, ANT Table 1) samples each prompt at its own CFG scale."""
    settings = settings or world.sampler
    if "guidance" not in frame:
        return generate_edited(world, edit, frame.prompt, frame.seed, cache_dir, settings, sld=sld,
                               safety_text=safety_text)
    images = None
    for scale, rows in frame.reset_index(drop=True).groupby("guidance", sort=True).indices.items():
        part = generate_edited(world, edit, frame.prompt.iloc[rows], frame.seed.iloc[rows], cache_dir,
                               replace(settings, guidance_scale=float(scale)), sld=sld, safety_text=safety_text)
        if images is None:
            images = np.empty((len(frame), *part.shape[1:]), dtype=part.dtype)
        images[rows] = part
    return images


class NSFWBenchmark:
    """ANT Table 1 / SM Tables 3–4: NudeNet counts on I2P(-analogue) prompts, FID and CLIP on COCO(-analogue).

    Reference statistics and prompt sets are prepared once; :meth:`evaluate` measures one model. I2P rows with a
    ``guidance`` column are sampled at their own CFG scale.
    """

    def __init__(self, world, cache_dir: str | Path, i2p: pd.DataFrame, coco: pd.DataFrame, coco_reference,
                 count: str = "detections", settings=None):
        """``coco_reference``: FID's reference (images, a folder or statistics); ``None`` skips FID (NaN)."""
        self.world, self.cache_dir, self.i2p, self.coco, self.count = world, Path(cache_dir), i2p, coco, count
        self.settings = settings or world.sampler
        self.detector = world.nsfw_detector()
        self.clip = world.clip_scorer()
        self.extractor = world.fid_extractor() if coco_reference is not None else None
        self.reference_stats = (feature_statistics(coco_reference, self.extractor) if coco_reference is not None
                                else None)

    def evaluate(self, name: str, edit: Edit | None = None, sld=None,
                 safety_text: str | None = None) -> tuple[dict, np.ndarray]:
        """One table row for the model ``name`` and its I2P images, redacted where the detector fires.

        ``edit``: the weight edit to measure (``None``: the original model). ``sld``: an
        :class:`unlearnkit.sampling.sld.SLDConfig` to sample the (original or edited) model under Safe Latent Diffusion's
        inference-time guidance instead of plain CFG (SLD-M rows), steering away from ``safety_text`` (default the
        world's c_S).
        """
        i2p_images, coco_images = (generate_frame(self.world, edit, frame, self.cache_dir, self.settings, sld=sld,
                                                  safety_text=safety_text)
                                   for frame in (self.i2p, self.coco))
        counts = nudity_counts(i2p_images, self.detector, count=self.count)
        row = {"method": name, **counts.row(), "flagged images": float(counts.flagged.mean()),
               "FID": (compute_fid(coco_images, self.reference_stats, self.extractor)
                       if self.reference_stats is not None else float("nan")),
               "CLIP": mean_clip_score(coco_images, list(self.coco.prompt), self.clip)["CLIP"]}
        return row, redact_boxes(i2p_images, counts.boxes_per_image)

    def evaluate_sexual(self, name: str, edit: Edit | None = None, sld=None, safety_text: str | None = None, *,
                        frame: pd.DataFrame) -> tuple[dict, np.ndarray]:
        """SM Table 4's row on ``frame`` (the I2P prompts labelled "sexual"): detections of the detector's
        ``sexual_labels`` (breasts and genitalia, F and M), their ``Total``, and CLIP between each image and its own
        prompt; ``edit`` / ``sld`` / ``safety_text`` as in :meth:`evaluate`. Returns the row and the redacted images."""
        images = generate_frame(self.world, edit, frame, self.cache_dir, self.settings, sld=sld,
                                safety_text=safety_text)
        counts = nudity_counts(images, self.detector, count=self.count)
        row = {"method": name, **counts.subset_row(self.detector.sexual_labels),
               "CLIP": mean_clip_score(images, list(frame.prompt), self.clip)["CLIP"], "N": len(frame)}
        return row, redact_boxes(images, counts.boxes_per_image)
