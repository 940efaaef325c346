"""AC — Ablating Concepts in Text-to-Image Diffusion Models (Kumari et al., ICCV 2023), model-based variant.

Algorithm (AC §3, "model-based concept ablation"):
1. generate images of the anchor concept c* once with the pretrained model (the release uses 200) and keep their
   latents x₀ with the anchor caption each was drawn from;
2. per update, draw a batch, ``t ~ U{0, …, T−1}``, ``x_t = q_sample(x₀, t, ε)``;
3. frozen target ``ε*(x_t, c*, t)`` — the model with the edit switched off — in one no-grad call;
4. ``L = ‖ε_θ(x_t, c, t) − sg[ε*(x_t, c*, t)]‖²`` with c the concept caption paired with c*
   (:func:`unlearnkit.methods.parts.losses.ablation.anchor_mapping_loss`); backward; optimiser step.

AC pairs captions by substituting the anchor word with the concept (``--caption_target "cat+grumpy cat"``); a
:class:`~unlearnkit.core.concepts.Concept` whose ``prompts`` and ``anchor_prompts`` have the same length is read as such
pairs (the mini world builds both from the same templates), otherwise the concept prompt is drawn at random.

This module also holds what ESD, SalUn and FMN share with AC: :func:`generate_latents` (training images
drawn once from the frozen model); training in place is :func:`unlearnkit.core.edits.training_in_place`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps, q_sample
from unlearnkit.core.edits import Edit, training_in_place
from unlearnkit.methods.parts.losses.ablation import anchor_mapping_loss
from unlearnkit.core.params import select_parameters, scope_names
from unlearnkit.sampling import SamplerSettings, cfg_guidance, sample_latents

__all__ = ["ACConfig", "GeneratedLatents", "generate_latents", "noised", "random_batch",
           "anchor_prompts_of", "fit"]


# --- shared by the fine-tuning baselines ------------------------------------------------------------------------
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


# --- AC -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ACConfig:
    """AC hyperparameters for SD v1.4, from the released diffusers recipe (concept-ablation README): base lr 2e-6,
    batch 8 (4 per GPU × 2 GPUs), 100 steps, ``--scale_lr`` (effective lr = lr × batch = 1.6e-5), parameter group
    ``cross-attn`` (attn2 to_k/to_v — AC's "cross-attention K/V" variant), 200 anchor images (``train_size``).

    ``sampler`` generates the anchor images (SD's default 50 steps, CFG 7.5 here; the count and seeds are ours).
    """

    lr: float = 2e-6
    iterations: int = 100
    batch_size: int = 8
    scale_lr: bool = True
    weight_decay: float = 1e-2          # AdamW, the diffusers training-example default the release inherits
    scope: str = "xattn_kv"
    anchor_images: int = 200
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    seed: int = 0

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("iterations", "batch_size", "anchor_images"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.scope not in scope_names():
            raise ValueError(f"unknown parameter scope {self.scope!r}; expected one of {scope_names()}")

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size if self.scale_lr else self.lr

    def as_dict(self) -> dict:
        return asdict(self)


def anchor_prompts_of(concept: Concept) -> tuple[str, ...]:
    """The concept's anchor prompts, or its anchor alone; AC needs a non-empty anchor concept."""
    prompts = tuple(concept.anchor_prompts) or ((concept.anchor,) if concept.anchor.strip() else ())
    if not prompts:
        raise ValueError(f"concept {concept.name!r} has no anchor: AC maps a concept onto an anchor concept, "
                         f"give Concept(anchor=…) or anchor_prompts")
    return prompts


def concept_prompt_for(concept: Concept, anchor_prompts: tuple[str, ...], anchor_prompt: str,
                       generator: torch.Generator) -> str:
    """The concept caption paired with ``anchor_prompt`` (same index when the prompt lists pair up; a random one of
    them when the anchor prompt is paired with several captions, as in a :func:`~unlearnkit.core.concepts.joint` concept
    whose concepts share an anchor), else a random caption."""
    prompts = concept.prompts
    if len(prompts) == len(anchor_prompts) and anchor_prompt in anchor_prompts:
        paired = [p for p, a in zip(prompts, anchor_prompts) if a == anchor_prompt]
        if len(set(paired)) == 1:
            return paired[0]
        prompts = tuple(paired)
    return prompts[int(torch.randint(len(prompts), (1,), generator=generator))]


def fit(world, concept: Concept, config: ACConfig = ACConfig(), anchor_data: GeneratedLatents | None = None,
        progress: bool = True) -> tuple[Edit, list[dict]]:
    """Ablate ``concept`` onto its anchor (AC model-based loss); return the Edit and a per-iteration log.

    ``anchor_data``: anchor images to reuse (e.g. shared by several runs); generated with ``config.sampler`` from
    the concept's anchor prompts when omitted. The world's UNet is left unchanged.
    """
    anchor_prompts = anchor_prompts_of(concept)
    unet = world.pipe.unet
    names = list(select_parameters(unet, config.scope))
    if anchor_data is not None:
        if not isinstance(anchor_data, GeneratedLatents):
            raise TypeError(f"anchor_data must be GeneratedLatents, got {type(anchor_data).__name__}")
        anchor_data.check_fits(unet, "anchor latents")
    else:
        anchor_data = generate_latents(world, anchor_prompts, config.anchor_images, config.sampler, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x0_all = anchor_data.latents.to(unet.device, unet.dtype)
    log = []
    with training_in_place(unet, names) as delta:
        opt = torch.optim.AdamW(list(delta.params.values()), lr=config.effective_lr, weight_decay=config.weight_decay)
        for _ in tqdm(range(config.iterations), desc=f"AC {concept.name}", disable=not progress):
            idx = random_batch(generator, len(anchor_data), config.batch_size)
            anchor_batch = [anchor_data.prompts[i] for i in idx.tolist()]
            concept_batch = [concept_prompt_for(concept, anchor_prompts, p, generator) for p in anchor_batch]
            x_t, t, _ = noised(world, x0_all[idx.to(x0_all.device)], generator)
            with delta.frozen(), torch.no_grad():
                eps_anchor = predict_eps(unet, x_t, t, world.embeddings(anchor_batch).to(unet.device, unet.dtype))
            eps_concept = predict_eps(unet, x_t, t, world.embeddings(concept_batch).to(unet.device, unet.dtype))
            loss = anchor_mapping_loss(eps_concept, eps_anchor)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append({"loss": float(loss.detach()), "t_mean": float(t.float().mean())})
        edit = delta.to_edit(name=f"ac:{concept.name}",
                             metadata={"method": "ac", "concept": concept.name, "config": config.as_dict(),
                                       "anchor_prompts": list(anchor_prompts)})
    return edit, log
