"""Training data the fine-tuning erasers share: images drawn once from the frozen model, random batches, ``x_t``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from unlearnkit.core.diffusion import q_sample
from unlearnkit.sampling import SamplerSettings, cfg_guidance, sample_latents

__all__ = ["GeneratedLatents", "generate_latents", "random_batch", "noised"]


@dataclass(frozen=True)
class GeneratedLatents:
    """Clean latents ``x₀`` ``[N, C, h, w]`` (VAE-scaled) and the prompt each image shows."""

    latents: torch.Tensor
    prompts: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.latents, torch.Tensor) or self.latents.ndim != 4 or len(self.latents) == 0:
            raise ValueError("latents must be a non-empty [N, C, h, w] tensor")
        prompts = (self.prompts,) if isinstance(self.prompts, str) else tuple(self.prompts)
        if len(prompts) != len(self.latents):
            raise ValueError(f"got {len(self.latents)} latents but {len(prompts)} prompts; give one prompt per image")
        object.__setattr__(self, "prompts", prompts)

    def __len__(self) -> int:
        return len(self.latents)

    def check_fits(self, unet, name: str = "latents") -> None:
        """Raise unless the latents have the UNet's input channel count."""
        if self.latents.shape[1] != unet.config.in_channels:
            raise ValueError(f"{name} have {self.latents.shape[1]} channels, the UNet takes "
                             f"{unet.config.in_channels}")


def generate_latents(world, prompts: Sequence[str], count: int, settings: SamplerSettings = SamplerSettings(),
                     seed: int = 0, batch_size: int = 64) -> GeneratedLatents:
    """``count`` images of ``prompts`` (cycled) from the world's current model, seeds ``seed, seed+1, …``.

    Call it before training starts, so the images come from the pretrained (frozen) model.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt to generate training images from")
    if not isinstance(count, int) or count <= 0:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    chosen = [prompts[i % len(prompts)] for i in range(count)]
    latents, _ = sample_latents(world.pipe, chosen, [seed + i for i in range(count)], settings,
                                guidance=cfg_guidance(settings.guidance_scale), embeddings=world.embeddings,
                                batch_size=batch_size)
    return GeneratedLatents(latents, tuple(chosen))


def random_batch(generator: torch.Generator, size: int, batch: int) -> torch.Tensor:
    """``batch`` indices drawn uniformly (with replacement) from ``range(size)``."""
    return torch.randint(size, (batch,), generator=generator)


def noised(world, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, t, ε)`` with ``t ~ U{0, …, T−1}`` per sample and ``x_t = q_sample(x₀, t, ε)``."""
    scheduler = world.pipe.scheduler
    t = torch.randint(scheduler.config.num_train_timesteps, (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    t = t.to(x0.device)
    return q_sample(scheduler, x0, t, noise), t, noise
