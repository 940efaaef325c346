"""The one seeded, batched DDIM loop, with guidance as hooks: plain CFG, ANT's CFG reversal at t′ (Eq. 1) and
SLD (:mod:`.sld`); :mod:`.cache` adds resumable, shardable, cached generation on top.

Every image's initial noise comes from its own seed, so an image depends only on (model, prompt, seed, sampler
settings, guidance), not on which other images share its batch.
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
from unlearnkit.core.errors import BadTypeError, UnlearnkitError
from unlearnkit.core.validation import check_integer, check_number, check_prompts_and_seeds

# guidance(eps_cond, eps_uncond, t_train, *eps_extra) -> eps used for the DDIM step. A hook may also have
#   extra_contexts: text embeddings ([1, L, d] each) whose predictions it needs; they join the same batched UNet
#       call and arrive as eps_extra, in order (SLD's safety concept);
#   reset(): called before each trajectory, for a hook with state (SLD's warm-up count and momentum);
#   needs_full_precision: True to skip the bf16 autocast on GPU;
#   guidance_scale: when present it must equal the sampler settings' scale (the cache keys the settings).
Guidance = Callable[..., torch.Tensor]
#: the largest UNet batch a generation call accepts (SD v1.4 at 64×64 latents: ~1 GB of activations per 16 images)
MAX_BATCH_SIZE = 4096


def check_batch_size(batch_size, name: str = "batch_size") -> int:
    """Images per UNet batch: an integer in ``[1, MAX_BATCH_SIZE]``."""
    return check_integer(batch_size, name, minimum=1, maximum=MAX_BATCH_SIZE)


@dataclass(frozen=True)
class SamplerSettings:
    """DDIM sampler settings; the papers use 50 steps and CFG 7.5 (ANT Table 6, SM §4.1)."""

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    eta: float = 0.0

    def __post_init__(self):
        check_integer(self.num_inference_steps, "num_inference_steps", minimum=1, maximum=1000)
        check_number(self.guidance_scale, "guidance_scale")
        # DDIM's σ interpolation: beyond 1 its update takes the square root of a negative number
        check_number(self.eta, "eta", minimum=0, maximum=1)

    def as_dict(self) -> dict:
        return asdict(self)


def check_sampler(value, name: str = "sampler") -> "SamplerSettings":
    """``value`` when it is a :class:`SamplerSettings` (a dict of its fields is not: build it first)."""
    if not isinstance(value, SamplerSettings):
        raise BadTypeError(f"{name}={value!r} ({type(value).__name__}): expected SamplerSettings"
                           f"(num_inference_steps, guidance_scale, eta)")
    return value


def cfg_guidance(scale: float) -> Guidance:
    """Plain classifier-free guidance ``ε(∅) + s·δ(c)`` with ``δ(c) = ε(c) − ε(∅)``."""
    scale = check_number(scale, "guidance scale")

    def guidance(eps_cond, eps_uncond, t):
        return guided_eps(eps_cond, eps_uncond, scale)

    return guidance


def cfg_reversal_guidance(scale: float, t_prime: float, num_inference_steps: int = 50,
                          num_train_timesteps: int = 1000) -> Guidance:
    """CFG reversed at paper steps ``≤ t′``, Eq. (1), ANT.

    ``t′`` is a paper step of the ``num_inference_steps`` (``N``) DDIM schedule (``N`` = pure noise, 1 = last):
    the last ``⌊t′⌋`` sampling steps are reversed, ``t′ = 0`` is plain CFG, ``t′ = N`` reverses every step.
    """
    scale = check_number(scale, "guidance scale")
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


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int], device, dtype=torch.float32) -> torch.Tensor:
    """``[N, C, h, w]`` standard normal noise, image ``i`` drawn from a CPU generator seeded with ``seeds[i]``."""
    from unlearnkit.core.validation import check_seeds

    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in check_seeds(seeds)]
    return torch.stack(noise).to(device=device, dtype=dtype)


def latent_shape(pipe) -> tuple[int, int, int]:
    size = pipe.unet.config.sample_size
    return (pipe.unet.config.in_channels, size, size)


def check_steps_fit(pipe, num_inference_steps: int) -> None:
    """Raise unless the ``num_inference_steps`` DDIM schedule fits in the pipeline's train timesteps."""
    train_steps = int(pipe.scheduler.config.num_train_timesteps)
    if num_inference_steps > train_steps:
        raise UnlearnkitError(f"num_inference_steps={num_inference_steps} exceeds the model's {train_steps} train "
                              f"timesteps: expected an integer in [1, {train_steps}]")


def ddim_scheduler_for(pipe, num_inference_steps: int) -> DDIMScheduler:
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def predict_guided_eps(unet, x_t: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor,
                       extra: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, ...]:
    """``(ε(x_t, c), ε(x_t, ∅), *ε(x_t, e) for e in extra)`` in one UNet call of batch ``(2 + len(extra))·B``;
    contexts of batch 1 are broadcast."""
    if not extra:
        return predict_eps(unet, x_t, t, cond, uncond)
    batch = x_t.shape[0]
    t = torch.as_tensor(t, device=x_t.device)
    t = t.expand(batch) if t.ndim == 0 else t
    contexts = [e.expand(batch, -1, -1) if e.shape[0] == 1 else e for e in (cond, uncond, *extra)]
    n = len(contexts)
    eps = unet(torch.cat([x_t] * n), torch.cat([t] * n), encoder_hidden_states=torch.cat(contexts)).sample
    return eps.chunk(n)


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
    prompts, seeds = check_prompts_and_seeds(prompts, seeds)
    if not isinstance(settings, SamplerSettings):
        raise BadTypeError(f"settings must be a SamplerSettings, got {type(settings).__name__}: {settings!r}")
    n_steps = settings.num_inference_steps
    for s in snapshot_steps:
        check_integer(s, "snapshot step")
        validate_paper_step(s, n_steps, name="snapshot step")
    check_batch_size(batch_size)
    check_steps_fit(pipe, n_steps)
    guidance = guidance or cfg_guidance(settings.guidance_scale)
    hook_scale = getattr(guidance, "guidance_scale", settings.guidance_scale)
    if hook_scale != settings.guidance_scale:
        raise ValueError(f"the guidance hook's scale {hook_scale!r} differs from settings.guidance_scale="
                         f"{settings.guidance_scale!r}; build the hook with the settings' scale")
    embeddings = embeddings or TextEmbeddingCache(pipe.tokenizer, pipe.text_encoder)
    unet = pipe.unet
    device, dtype = unet.device, unet.dtype
    uncond = embeddings([""]).to(device, dtype)
    extra = [e.to(device, dtype) for e in getattr(guidance, "extra_contexts", ())]
    for e in extra:
        if e.ndim != 3 or e.shape[0] != 1 or e.shape[1:] != uncond.shape[1:]:
            raise ValueError(f"the guidance hook's extra context {tuple(e.shape)} must be one prompt's embeddings "
                             f"[1, {uncond.shape[1]}, {uncond.shape[2]}]")
    precision = nullcontext if getattr(guidance, "needs_full_precision", False) else inference_precision
    reset = getattr(guidance, "reset", None)
    finals, snaps = [], {int(s): [] for s in snapshot_steps}
    snap_t: dict[int, int] = {}
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="generating", disable=not progress):
        scheduler = ddim_scheduler_for(pipe, n_steps)
        cond = embeddings(prompts[start:start + batch_size]).to(device, dtype)
        x = initial_noise(seeds[start:start + batch_size], latent_shape(pipe), device, dtype)
        x = x * scheduler.init_noise_sigma
        last_needed = min(snaps) if (snaps and stop_at_last_snapshot) else 0
        if reset is not None:
            reset()
        for i, t in enumerate(scheduler.timesteps):
            paper_step = n_steps - i
            if paper_step in snaps:
                snaps[paper_step].append(x.clone())
                snap_t[paper_step] = int(t)
            if paper_step <= last_needed:
                break
            with precision(device):
                eps_all = predict_guided_eps(unet, x, t, cond, uncond, extra)
            eps = guidance(*(e.to(dtype) for e in eps_all[:2]), int(t), *(e.to(dtype) for e in eps_all[2:]))
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
