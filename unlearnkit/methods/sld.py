"""SLD-M — Safe Latent Diffusion's medium configuration (Schramowski et al., CVPR 2023, SLD §3): a guidance applied
while sampling, no weight change.

Its fit trains nothing: the Erasure has no Edit, and ``info["sampling"]`` holds the keyword arguments of
:func:`unlearnkit.experiments.evaluation.generate_edited` — the :class:`~unlearnkit.sampling.sld.SLDConfig` and the
safety concept ``c_S`` (:func:`safety_text_for`). The guidance itself is :mod:`unlearnkit.sampling.sld`.
"""
from __future__ import annotations

from typing import Sequence

from unlearnkit.methods.contract import INFERENCE, ONE, SEVERAL_NATIVE, Erasure, Method, listed
from unlearnkit.sampling.sld import SLDConfig

__all__ = ["safety_text_for", "fit", "METHODS"]


def safety_text_for(concepts: Sequence) -> str | None:
    """SLD's safety concept c_S for erasing ``concepts``: ``None`` (the world's own c_S, SLD's inappropriate-content
    text) when they are all unsafe concepts, else their names joined by ", " (the SLD-M rows of ANT Tables 2–3).
    Like any prompt it is cut at the text encoder's length, so only the first names of a long list take part."""
    if all(c.kind == "unsafe" for c in concepts):
        return None
    return ", ".join(c.name for c in concepts)


def fit(world, concepts, config: SLDConfig = SLDConfig(), *, progress: bool = False) -> Erasure:
    """No Edit; ``info["sampling"] = {"sld": config, "safety_text": …}`` steers generation away from the concepts."""
    concepts = listed(concepts, "SLD-M")
    return Erasure([], [], {"sampling": {"sld": config, "safety_text": safety_text_for(concepts)}})


METHODS = (
    Method("sld-m", "SLD-M", "SLD-M: Safe Latent Diffusion's medium guidance while sampling, no weight change (SLD)",
           SLDConfig, frozenset({ONE, SEVERAL_NATIVE, INFERENCE}), fit),
)
