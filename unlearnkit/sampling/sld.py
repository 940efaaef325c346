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
μ is clamped to at most 1 as in SLD's release, for which its WEAK/MEDIUM/STRONG/MAX settings were tuned (the
paper prints ``max(1, ·)``). SLD-M ("medium") is the baseline of ANT Table 1 and SM Tables 3–4.

:func:`sld_guidance` is a guidance hook for :func:`unlearnkit.sampling.sample_latents` (and so for
:func:`unlearnkit.sampling.generate` and the cached :func:`unlearnkit.sampling.cache.generate_cached`); the loop
makes the three predictions (prompt, unconditional, safety concept) in one batched UNet call per step.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch

from unlearnkit.core.validation import check_integer, check_number

__all__ = ["SLD_SAFETY_CONCEPT", "SLDConfig", "SLD_WEAK", "SLD_MEDIUM", "SLD_STRONG", "SLD_MAX", "SafeLatentGuidance",
           "sld_guidance"]

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
        check_number(self.sld_guidance_scale, "sld_guidance_scale", minimum=0)
        check_integer(self.sld_warmup_steps, "sld_warmup_steps", minimum=0)
        check_number(self.sld_threshold, "sld_threshold")
        check_number(self.sld_momentum_scale, "sld_momentum_scale", minimum=0)
        check_number(self.sld_mom_beta, "sld_mom_beta", minimum=0, below=1)

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
    """SLD as a guidance hook: ``guidance(eps_cond, eps_uncond, t, eps_safety) -> ε̄``, SLD §3.

    ``safety_embeddings`` ``[1, L, d]`` is ``c_S``; the sampler predicts ``ε_S`` from it (:attr:`extra_contexts`).
    Stateful — it counts DDIM steps for the warm-up and carries the momentum ν; the sampler calls :meth:`reset`
    before each trajectory. :attr:`guidance_id` names it in the generation cache.
    """

    # s_S = 1000 and λ = 0.01 act on |ε_p − ε_S| far below bf16's resolution, so SLD samples in full precision.
    needs_full_precision = True

    def __init__(self, safety_embeddings: torch.Tensor, config: SLDConfig = SLDConfig(), guidance_scale: float = 7.5):
        if not isinstance(safety_embeddings, torch.Tensor) or safety_embeddings.ndim != 3 or \
                safety_embeddings.shape[0] != 1:
            raise ValueError("safety_embeddings must be one prompt's text embeddings, shape [1, L, d]")
        if not isinstance(config, SLDConfig):
            raise TypeError(f"config must be an SLDConfig, got {type(config).__name__}: {config!r}")
        self.safety_embeddings = safety_embeddings
        self.config = config
        self.guidance_scale = check_number(guidance_scale, "guidance_scale")
        self.reset()

    @property
    def extra_contexts(self) -> tuple[torch.Tensor]:
        return (self.safety_embeddings,)

    @property
    def guidance_id(self) -> str:
        """``"sld:{...}"``: the SLD config, the CFG scale and a hash of ``c_S``'s embeddings."""
        raw = self.safety_embeddings.detach().float().contiguous().cpu().numpy().tobytes()
        recipe = {**self.config.as_dict(), "guidance_scale": self.guidance_scale,
                  "safety_sha256": hashlib.sha256(raw).hexdigest()[:16]}
        return "sld:" + json.dumps(recipe, sort_keys=True)

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

    def __call__(self, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, t: int,
                 eps_safety: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if self.momentum is None:
            self.momentum = torch.zeros_like(eps_cond)
        gamma = self.safety_direction(eps_cond, eps_uncond, eps_safety) + cfg.sld_momentum_scale * self.momentum
        self.momentum = cfg.sld_mom_beta * self.momentum + (1 - cfg.sld_mom_beta) * gamma
        direction = eps_cond - eps_uncond
        if self.step >= cfg.sld_warmup_steps:
            direction = direction - gamma
        self.step += 1
        return eps_uncond + self.guidance_scale * direction


def sld_guidance(safety_embeddings: torch.Tensor, config: SLDConfig = SLDConfig(),
                 guidance_scale: float = 7.5) -> SafeLatentGuidance:
    """The SLD hook for ``c_S`` embeddings ``[1, L, d]`` (e.g. ``world.embeddings([SLD_SAFETY_CONCEPT])``) at CFG
    scale ``s_g`` = ``guidance_scale``, which must equal the sampler settings' ``guidance_scale``."""
    return SafeLatentGuidance(safety_embeddings, config, guidance_scale)
