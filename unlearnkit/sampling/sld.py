"""SLD — Safe Latent Diffusion (Schramowski et al., CVPR 2023): inference-time safety guidance, no weight change.

SLD §3 extends classifier-free guidance with a third prediction, ``ε_S = ε(z_t, c_S)`` for a text ``c_S`` that
describes inappropriate content, and steers away from it element-wise:

    ε̄ = ε_∅ + s_g (ε_p − ε_∅ − γ_t),                         (CFG with the safety term subtracted)
    γ_t = μ ⊙ (ε_S − ε_∅) + s_m ν_t,                           (safety direction plus momentum)
    μ = min(1, s_S |ε_p − ε_S|) where ε_p − ε_S < λ, else 0,   (only where the prompt leans towards c_S)
    ν_{t+1} = β_m ν_t + (1 − β_m) γ_t,  ν_0 = 0,

and γ_t is applied only from DDIM step δ on (warm-up; the momentum accumulates from the first step). ``ε_p`` is the
prompt's prediction, ``s_g`` the CFG scale (7.5 in the paper), ``s_S`` = ``sld_guidance_scale``, λ =
``sld_threshold``, ``s_m`` = ``sld_momentum_scale``, ``β_m`` = ``sld_mom_beta``, δ = ``sld_warmup_steps``.
The paper writes the scale as ``max(1, ·)``; the released pipeline (and diffusers' ``StableDiffusionPipelineSafe``)
clamps it to at most 1, and the published WEAK/MEDIUM/STRONG/MAX settings were tuned with that clamp, so we
follow the release. SLD-M ("medium") is the baseline of ANT Table 1 and SM Tables 3–4.

:func:`sample_latents_sld` is :func:`unlearnkit.sampling.sample_latents`'s DDIM loop with the three predictions
(prompt, unconditional, safety concept) in **one** batched UNet call per step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearnkit.core.diffusion import TextEmbeddingCache
from unlearnkit.sampling import SamplerSettings, ddim_scheduler_for, decode_latents, initial_noise, latent_shape

__all__ = ["SLD_SAFETY_CONCEPT", "SLDConfig", "SLD_WEAK", "SLD_MEDIUM", "SLD_STRONG", "SLD_MAX", "SafeLatentGuidance",
           "sld_guidance", "predict_eps_with_safety", "sample_latents_sld", "generate_sld"]

# SLD's default safety concept c_S (the I2P categories), as in the paper and its pipeline.
SLD_SAFETY_CONCEPT = (
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, bodily fluids, blood, "
    "obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, brutality, cruelty"
)


@dataclass(frozen=True)
class SLDConfig:
    """SLD hyperparameters; the defaults are the paper's **medium** configuration (SLD-M)."""

    sld_guidance_scale: float = 1000.0   # s_S
    sld_warmup_steps: int = 10           # δ
    sld_threshold: float = 0.01          # λ
    sld_momentum_scale: float = 0.3      # s_m
    sld_mom_beta: float = 0.4            # β_m

    def __post_init__(self):
        if self.sld_guidance_scale < 0:
            raise ValueError(f"sld_guidance_scale must be >= 0, got {self.sld_guidance_scale!r}")
        if not (isinstance(self.sld_warmup_steps, int) and self.sld_warmup_steps >= 0):
            raise ValueError(f"sld_warmup_steps must be a non-negative integer, got {self.sld_warmup_steps!r}")
        if self.sld_momentum_scale < 0:
            raise ValueError(f"sld_momentum_scale must be >= 0, got {self.sld_momentum_scale!r}")
        if not (0 <= self.sld_mom_beta < 1):
            raise ValueError(f"sld_mom_beta must lie in [0, 1), got {self.sld_mom_beta!r}")

    def as_dict(self) -> dict:
        return asdict(self)


# The paper's four hyper-parameter configurations, weakest to strongest.
SLD_WEAK = SLDConfig(sld_guidance_scale=20, sld_warmup_steps=15, sld_threshold=0.0, sld_momentum_scale=0.0,
                     sld_mom_beta=0.0)
SLD_MEDIUM = SLDConfig()
SLD_STRONG = SLDConfig(sld_guidance_scale=2000, sld_warmup_steps=7, sld_threshold=0.025, sld_momentum_scale=0.5,
                       sld_mom_beta=0.7)
SLD_MAX = SLDConfig(sld_guidance_scale=5000, sld_warmup_steps=0, sld_threshold=1.0, sld_momentum_scale=0.5,
                    sld_mom_beta=0.7)


class SafeLatentGuidance:
    """The SLD guidance hook: ``guidance(eps_cond, eps_uncond, eps_safety, guidance_scale) -> ε̄``.

    Stateful — it counts DDIM steps for the warm-up and carries the momentum ν — so call :meth:`reset` before each
    new trajectory (:func:`sample_latents_sld` does). ``safety_embeddings`` ``[1, L, d]`` is ``c_S``.
    """

    def __init__(self, safety_embeddings: torch.Tensor, config: SLDConfig = SLDConfig()):
        if not isinstance(safety_embeddings, torch.Tensor) or safety_embeddings.ndim != 3 or \
                safety_embeddings.shape[0] != 1:
            raise ValueError("safety_embeddings must be one prompt's text embeddings, shape [1, L, d]")
        self.safety_embeddings = safety_embeddings
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.step = 0
        self.momentum: torch.Tensor | None = None

    def safety_direction(self, eps_cond: torch.Tensor, eps_uncond: torch.Tensor,
                         eps_safety: torch.Tensor) -> torch.Tensor:
        """``μ ⊙ (ε_S − ε_∅)`` with ``μ = min(1, s_S|ε_p − ε_S|)`` where ``ε_p − ε_S < λ``, else 0."""
        cfg = self.config
        difference = eps_cond - eps_safety
        scale = torch.clamp(difference.abs() * cfg.sld_guidance_scale, max=1.0)
        scale = torch.where(difference < cfg.sld_threshold, scale, torch.zeros_like(scale))
        return scale * (eps_safety - eps_uncond)

    def __call__(self, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, eps_safety: torch.Tensor,
                 guidance_scale: float) -> torch.Tensor:
        cfg = self.config
        if self.momentum is None:
            self.momentum = torch.zeros_like(eps_cond)
        gamma = self.safety_direction(eps_cond, eps_uncond, eps_safety) + cfg.sld_momentum_scale * self.momentum
        self.momentum = cfg.sld_mom_beta * self.momentum + (1 - cfg.sld_mom_beta) * gamma
        direction = eps_cond - eps_uncond
        if self.step >= cfg.sld_warmup_steps:
            direction = direction - gamma
        self.step += 1
        return eps_uncond + guidance_scale * direction


def sld_guidance(safety_embeddings: torch.Tensor, config: SLDConfig = SLDConfig()) -> SafeLatentGuidance:
    """The SLD hook for safety concept embeddings ``c_S`` ``[1, L, d]`` (e.g. ``world.embeddings([SLD_SAFETY_CONCEPT])``)."""
    return SafeLatentGuidance(safety_embeddings, config)


def predict_eps_with_safety(unet, x_t: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor,
                            safety: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ε(x_t, c_p), ε(x_t, ∅), ε(x_t, c_S))`` in one UNet call of batch ``3B``; ``uncond``/``safety`` may be
    ``[1, L, d]`` and are broadcast."""
    batch = x_t.shape[0]
    t = torch.as_tensor(t, device=x_t.device)
    t = t.expand(batch) if t.ndim == 0 else t
    contexts = [e.expand(batch, -1, -1) if e.shape[0] == 1 else e for e in (cond, uncond, safety)]
    eps = unet(torch.cat([x_t] * 3), torch.cat([t] * 3), encoder_hidden_states=torch.cat(contexts)).sample
    eps_cond, eps_uncond, eps_safety = eps.chunk(3)
    return eps_cond, eps_uncond, eps_safety


def _validate(prompts, seeds) -> tuple[list[str], list[int]]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
    return prompts, seeds


@torch.no_grad()
def sample_latents_sld(pipe, prompts: Sequence[str], seeds: Sequence[int], guidance: SafeLatentGuidance,
                       settings: SamplerSettings = SamplerSettings(), embeddings: TextEmbeddingCache | None = None,
                       batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Seeded DDIM generation under SLD; returns final latents ``[N, C, h, w]``.

    Each image's noise comes from its own seed (as in :func:`unlearnkit.sampling.sample_latents`). With
    ``sld_guidance_scale = 0`` the scale μ is 0, so γ and ν stay 0 and the result is plain CFG at
    ``settings.guidance_scale``.
    """
    prompts, seeds = _validate(prompts, seeds)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    if not isinstance(guidance, SafeLatentGuidance):
        raise TypeError(f"guidance must be a SafeLatentGuidance (sld_guidance(...)), got {type(guidance).__name__}")
    embeddings = embeddings or TextEmbeddingCache(pipe.tokenizer, pipe.text_encoder)
    unet = pipe.unet
    device, dtype = unet.device, unet.dtype
    uncond = embeddings([""]).to(device, dtype)
    safety = guidance.safety_embeddings.to(device, dtype)
    if safety.shape[1:] != uncond.shape[1:]:
        raise ValueError(f"safety embeddings {tuple(safety.shape)} do not match the text encoder's "
                         f"{tuple(uncond.shape)}")
    finals = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generating (SLD)", disable=not progress):
        scheduler = ddim_scheduler_for(pipe, settings.num_inference_steps)
        cond = embeddings(prompts[start:start + batch_size]).to(device, dtype)
        x = initial_noise(seeds[start:start + batch_size], latent_shape(pipe), device, dtype)
        x = x * scheduler.init_noise_sigma
        guidance.reset()
        for t in scheduler.timesteps:
            eps_cond, eps_uncond, eps_safety = predict_eps_with_safety(unet, x, t, cond, uncond, safety)
            eps = guidance(eps_cond, eps_uncond, eps_safety, settings.guidance_scale)
            x = scheduler.step(eps, t, x, eta=settings.eta).prev_sample
        finals.append(x)
    return torch.cat(finals)


def generate_sld(pipe, prompts: Sequence[str], seeds: Sequence[int], guidance: SafeLatentGuidance,
                 settings: SamplerSettings = SamplerSettings(), embeddings: TextEmbeddingCache | None = None,
                 batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """One SLD image per (prompt, seed): uint8 ``[N, H, W, 3]``."""
    latents = sample_latents_sld(pipe, prompts, seeds, guidance, settings, embeddings, batch_size, progress)
    return decode_latents(pipe.vae, latents)
