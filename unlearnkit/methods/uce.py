"""UCE — Unified Concept Editing (Gandikota et al., WACV 2024): a closed-form edit of every cross-attention K/V, UCE §3.

    W* = (λW + Σ_e s_e v*_e c_eᵀ + Σ_p s_p W c_p c_pᵀ)(λI + Σ_e s_e c_e c_eᵀ + Σ_p s_p c_p c_pᵀ)⁻¹,  v*_e = W c_guide(e)

``c_e``: an erased concept's embedding, ``c_guide`` its guide's (the Concept's ``anchor`` unless ``guides`` is given),
``c_p``: preserved texts. Contexts are the last content token of each text (``tokens="all"``: every position of the
padded prompt). No training loop and no UNet call: one float64 solve per layer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from unlearnkit.core.edits import Edit
from unlearnkit.core.params import select_parameters
from unlearnkit.core.tokens import last_content_index
from unlearnkit.core.validation import check_choice, check_number
from unlearnkit.methods.contract import ONE, SEVERAL_NATIVE, Erasure, Method, listed
from unlearnkit.methods.parts.closed_form import ClosedFormSolver

__all__ = ["UCEConfig", "token_contexts", "build_solver", "fit", "METHODS"]

TOKEN_MODES = ("last", "all")


@dataclass(frozen=True)
class UCEConfig:
    """UCE's SD v1.4 defaults: λ (``lamb``) 0.5, erase and preserve scales 1, the last content token of each
    concept."""

    lamb: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    tokens: str = "last"

    def __post_init__(self):
        check_number(self.lamb, "lamb", positive=True)       # λ > 0 keeps the system invertible
        check_number(self.erase_scale, "erase_scale", positive=True)
        check_number(self.preserve_scale, "preserve_scale", minimum=0)
        check_choice(self.tokens, "tokens", TOKEN_MODES)

    def as_dict(self) -> dict:
        return asdict(self)


def token_contexts(world, texts: Sequence[str], tokens: str = "last") -> torch.Tensor:
    """Context vectors of ``texts``: ``[n, d]`` (last content token of each) or ``[n·L, d]`` (every position)."""
    if tokens not in TOKEN_MODES:
        raise ValueError(f"tokens must be one of {TOKEN_MODES}, got {tokens!r}")
    embeddings = world.embeddings(list(texts))  # [n, L, d]
    if tokens == "all":
        return embeddings.reshape(-1, embeddings.shape[-1])
    index = torch.tensor([last_content_index(world.pipe.tokenizer, text) for text in texts])
    return embeddings[torch.arange(len(texts)), index.to(embeddings.device)]


def build_solver(world, erase_texts: Sequence[str], guide_texts: Sequence[str], preserve_texts: Sequence[str] = (),
                 config: UCEConfig = UCEConfig()) -> ClosedFormSolver:
    """The UCE system for all layers: mapped pairs ``(c_e → W c_guide)`` weighted by ``erase_scale`` and preserved
    contexts weighted by ``preserve_scale``."""
    erase_contexts = token_contexts(world, erase_texts, config.tokens)
    guide_contexts = token_contexts(world, guide_texts, config.tokens)
    solver = ClosedFormSolver(config.lamb, dim=erase_contexts.shape[-1])
    solver.add_mapped(erase_contexts, guide_contexts, config.erase_scale)
    if preserve_texts and config.preserve_scale > 0:
        solver.add_preserved(token_contexts(world, preserve_texts, config.tokens), config.preserve_scale)
    return solver


def _texts(name: str, texts, allow_empty_strings: bool) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    for t in texts:
        if not isinstance(t, str) or (not allow_empty_strings and not t.strip()):
            raise ValueError(f"{name} must be {'strings' if allow_empty_strings else 'non-empty strings'}, got {t!r}")
    return texts


def fit(world, concepts, config: UCEConfig = UCEConfig(), *, progress: bool = False,
        guides: str | Sequence[str] | None = None, preserve: Sequence[str] = ()) -> Erasure:
    """Erase the concepts in closed form; the Edit changes every attn2 to_k/to_v weight, the log has one row per
    layer (``‖ΔW‖_F``). The world's UNet is never modified.

    ``guides``: one guide text per concept (or one for all); default each Concept's ``anchor``. ``preserve``: texts
    whose keys and values must stay (e.g. the preserved artists of UCE's multi-concept runs).
    """
    concepts = listed(concepts, "UCE")
    erase_texts = _texts("concept names", [c.name for c in concepts], allow_empty_strings=False)
    if guides is None:
        guide_texts = [c.anchor for c in concepts]
    elif isinstance(guides, str):
        guide_texts = [guides] * len(concepts)
    else:
        guide_texts = list(guides)
    guide_texts = _texts("guides", guide_texts, allow_empty_strings=True)
    if len(guide_texts) != len(erase_texts):
        raise ValueError(f"got {len(guide_texts)} guides for {len(erase_texts)} concepts; give one per concept")
    preserve_texts = _texts("preserve", preserve, allow_empty_strings=False)
    overlap = set(preserve_texts) & set(erase_texts)
    if overlap:
        raise ValueError(f"texts both erased and preserved: {sorted(overlap)}")
    solver = build_solver(world, erase_texts, guide_texts, preserve_texts, config)
    deltas, log = {}, []
    for name, weight in select_parameters(world.pipe.unet, "xattn_kv").items():
        delta = (solver.solve(weight.detach()) - weight.detach()).cpu()
        deltas[name] = delta
        log.append({"parameter": name, "delta_norm": float(torch.linalg.matrix_norm(delta.double()))})
    if not deltas:
        raise ValueError("the UNet has no attn2 to_k/to_v weights to edit")
    label = "+".join(erase_texts)
    edit = Edit(deltas, name=f"uce:{label}",
                metadata={"method": "uce", "concepts": erase_texts, "guides": guide_texts,
                          "preserve": preserve_texts, "config": config.as_dict()})
    return Erasure([edit], log)


METHODS = (
    Method("uce", "UCE", "UCE: closed-form edit of the cross-attention keys/values (UCE)", UCEConfig,
           frozenset({ONE, SEVERAL_NATIVE}), fit),
)
