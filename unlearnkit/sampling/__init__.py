"""Seeded, batched DDIM generation with a guidance hook — plain CFG and ANT's CFG reversal at t′.

Every image's initial noise comes from its own seed, so an image depends only on (model, prompt, seed,
sampler settings), never on the batch it was generated in.
"""
from __future__ import annotations

from contextlib import nullcontext

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from unlearnkit.core.diffusion import TextEmbeddingCache, guided_eps, predict_eps, validate_paper_step

# guidance(eps_cond, eps_uncond, t_train) -> eps used for the DDIM step
Guidance = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    """DDIM sampler settings; the papers use 50 steps and CFG 7.5 (ANT Table 6, SM §4.1)."""

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    eta: float = 0.0

    def __post_init__(self):
        if not isinstance(self.num_inference_steps, int) or self.num_inference_steps <= 0:
            raise ValueError(f"num_inference_steps must be a positive integer, got {self.num_inference_steps!r}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def cfg_guidance(scale: float) -> Guidance:
    """Plain classifier-free guidance ``ε(∅) + s·δ(c)`` with ``δ(c) = ε(c) − ε(∅)``."""

    def guidance(eps_cond, eps_uncond, t):
        return guided_eps(eps_cond, eps_uncond, scale)

    return guidance


def cfg_reversal_guidance(scale: float, t_prime: float, num_inference_steps: int = 50,
                          num_train_timesteps: int = 1000) -> Guidance:
    """CFG reversed at paper steps ``≤ t′``, Eq. (1), ANT.

    ``t′`` is a paper step of the ``num_inference_steps`` (``N``) DDIM schedule (``N`` = pure noise, 1 = last):
    the last ``⌊t′⌋`` sampling steps are reversed, ``t′ = 0`` is plain CFG, ``t′ = N`` reverses every step.
    """
    validate_paper_step(t_prime, num_inference_steps)
    # DDIM ("leading", steps_offset in 1..stride) takes paper step k at train t = (k-1)·stride + offset
    stride = num_train_timesteps // num_inference_steps
    if stride < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps} exceeds num_train_timesteps={num_train_timesteps}")

    def guidance(eps_cond, eps_uncond, t):
        paper_step = max(1, -(-int(t) // stride))  # ⌈t / stride⌉
        sign = -1.0 if paper_step <= t_prime else 1.0
        return guided_eps(eps_cond, eps_uncond, sign * scale)

    return guidance


def _validate(prompts, seeds) -> tuple[list[str], list[int]]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt to generate")
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"prompts must be strings, got {type(p).__name__}: {p!r}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
    return prompts, seeds


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int], device, dtype=torch.float32) -> torch.Tensor:
    """``[N, C, h, w]`` standard normal noise, image ``i`` drawn from a CPU generator seeded with ``seeds[i]``."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)


def latent_shape(pipe) -> tuple[int, int, int]:
    size = pipe.unet.config.sample_size
    return (pipe.unet.config.in_channels, size, size)


def ddim_scheduler_for(pipe, num_inference_steps: int) -> DDIMScheduler:
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def inference_precision(device):
    """bf16 autocast for sampling on a GPU (weights stay as they are, fp32 where they are trained); nothing on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def sample_latents(pipe, prompts: Sequence[str], seeds: Sequence[int], settings: SamplerSettings = SamplerSettings(),
                   guidance: Guidance | None = None, embeddings: TextEmbeddingCache | None = None,
                   snapshot_steps: Sequence[int] = (), batch_size: int = 64, progress: bool = False,
                   stop_at_last_snapshot: bool = False):
    """Run DDIM from each seed's noise; return final latents and the latents *entering* each requested paper step.

    Args:
        snapshot_steps: paper steps (``N`` = first step … 1 = last) whose input latent ``x_t`` to keep — one
            trajectory serves every requested step (ANT needs two from the same noise).
    Returns:
        ``(latents [N, C, h, w], {paper_step: (x_t [N, C, h, w], t_train)})``.
    """
    prompts, seeds = _validate(prompts, seeds)
    n_steps = settings.num_inference_steps
    for s in snapshot_steps:
        validate_paper_step(s, n_steps, name="snapshot step")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    guidance = guidance or cfg_guidance(settings.guidance_scale)
    embeddings = embeddings or TextEmbeddingCache(pipe.tokenizer, pipe.text_encoder)
    unet = pipe.unet
    device, dtype = unet.device, unet.dtype
    uncond = embeddings([""]).to(device, dtype)
    finals, snaps = [], {int(s): [] for s in snapshot_steps}
    snap_t: dict[int, int] = {}
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="generating", disable=not progress):
        scheduler = ddim_scheduler_for(pipe, n_steps)
        cond = embeddings(prompts[start:start + batch_size]).to(device, dtype)
        x = initial_noise(seeds[start:start + batch_size], latent_shape(pipe), device, dtype)
        x = x * scheduler.init_noise_sigma
        last_needed = min(snaps) if (snaps and stop_at_last_snapshot) else 0
        for i, t in enumerate(scheduler.timesteps):
            paper_step = n_steps - i
            if paper_step in snaps:
                snaps[paper_step].append(x.clone())
                snap_t[paper_step] = int(t)
            if paper_step <= last_needed:
                break
            with inference_precision(device):
                eps_cond, eps_uncond = predict_eps(unet, x, t, cond, uncond)
            eps = guidance(eps_cond.to(dtype), eps_uncond.to(dtype), int(t))
            x = scheduler.step(eps, t, x, eta=settings.eta).prev_sample
        finals.append(x)
    snapshots = {s: (torch.cat(v), snap_t[s]) for s, v in snaps.items()}
    return torch.cat(finals), snapshots


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """VAE-decode latents (scaled by ``vae.config.scaling_factor``) to uint8 images ``[N, H, W, 3]``."""
    out = []
    for i in range(0, len(latents), batch_size):
        z = latents[i:i + batch_size].to(vae.device, vae.dtype) / vae.config.scaling_factor
        with inference_precision(vae.device):
            img = (vae.decode(z).sample.float() + 1) / 2
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
    return torch.cat(out).numpy()


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], settings: SamplerSettings = SamplerSettings(),
             guidance: Guidance | None = None, embeddings: TextEmbeddingCache | None = None, batch_size: int = 64,
             progress: bool = False) -> np.ndarray:
    """Generate one image per (prompt, seed): uint8 ``[N, H, W, 3]``."""
    latents, _ = sample_latents(pipe, prompts, seeds, settings, guidance, embeddings, (), batch_size, progress)
    return decode_latents(pipe.vae, latents)
