"""ANT — Auto-steering deNoising Trajectories (single-concept erasure), ANT §3.2–3.3.

Algorithm per update (Eq. 3, Eq. 6):
1. draw paper steps s₁ > t′ ≥ s₂ and a seed; run **one** DDIM trajectory of the frozen model from that seed's
   noise and keep z₁ (entering s₁) and z₂ (entering s₂);
2. frozen predictions ε*(z, c), ε*(z, ∅) at both points in one no-grad UNet call (the model with the edit off);
3. trainable predictions ε_θ(z, c) (and ε_θ(z, ∅) when λ₂/λ₃ > 0) at both points in one UNet call;
4. L = Eq. (3); backward; ∇θ ← M* ⊙ ∇θ; Adam step.

The saliency map M* (Eq. 4–5) intersects gradient maps over N_c prompts × N_s seeds (:func:`saliency_mask`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps, validate_paper_step
from unlearnkit.core.edits import Edit, TrainableDelta, training_in_place
from unlearnkit.methods.parts.losses.trajectory import STAGE_SPLITS, TrajectoryLossWeights, draw_stage_steps, trajectory_loss_terms
from unlearnkit.methods.parts.saliency import Mask, SaliencyThreshold, check_mask_in_scope, intersect_saliency_maps, nonempty, saliency_map
from unlearnkit.core.params import select_parameters
from unlearnkit.sampling import SamplerSettings, cfg_guidance, sample_latents
from unlearnkit.methods.parts.trajectory_bank import TrajectoryBank, sample_trajectory_bank


@dataclass(frozen=True)
class ANTConfig:
    """ANT hyperparameters; defaults are ANT Table 6's NSFW row (lr 5e-4, 250 iterations, λ = (1, 0.5, 0.5), t′ = 43)."""

    lr: float = 5e-4
    iterations: int = 250
    weights: TrajectoryLossWeights = field(default_factory=TrajectoryLossWeights)
    t_prime: int = 43
    stage_split: str = "paper"
    scope: str = "unet"                 # parameters the mask may select (ANT Single trains the whole UNet)
    batch_size: int = 1
    num_inference_steps: int = 50
    trajectory_guidance: float = 7.5    # CFG used to produce z₁, z₂ (ANT Multiple: 7.5; ANT Single/ESD: 3)
    seed: int = 0
    trajectory_bank: int | None = None  # J frozen runs sampled once (unlearnkit.methods.parts.trajectory_bank); None: a fresh
                                        # trajectory per update, as the paper and the release do

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.iterations, int) and self.iterations > 0):
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")
        validate_paper_step(self.t_prime, self.num_inference_steps)
        if not (1 <= self.t_prime < self.num_inference_steps):
            raise ValueError(f"t'={self.t_prime!r} must leave both stages non-empty: "
                             f"expected 1 <= t' < {self.num_inference_steps}")
        if self.stage_split not in STAGE_SPLITS:
            raise ValueError(f"stage_split must be one of {STAGE_SPLITS}, got {self.stage_split!r}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size!r}")
        if self.trajectory_bank is not None and (not isinstance(self.trajectory_bank, int)
                                                 or self.trajectory_bank < self.batch_size):
            raise ValueError(f"trajectory_bank must be None or an integer >= batch_size ({self.batch_size}), "
                             f"got {self.trajectory_bank!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SaliencyConfig:
    """Augmentation-enhanced saliency map (ANT §3.3): N_c prompts × N_s seeds, each thresholded, intersected."""

    threshold: SaliencyThreshold = field(default_factory=lambda: SaliencyThreshold(keep_fraction=0.5))
    seeds: tuple[int, ...] = (24, 42, 98, 403, 3407)   # the seeds of the ANT release
    max_prompts: int | None = None
    augment: int | None = None          # N_c prompts from the world's seeded prompt augmentation (None: the concept's)
    augment_seed: int = 0

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("SaliencyConfig.seeds is empty: give at least one seed")
        if self.augment is not None and (not isinstance(self.augment, int) or self.augment <= 0):
            raise ValueError(f"SaliencyConfig.augment must be a positive number of prompts or None, got {self.augment!r}")


def _concept_prompts(concept: Concept | None, prompts) -> list[str]:
    prompts = list(prompts if prompts is not None else (concept.prompts if concept is not None else ()))
    if not prompts:
        raise ValueError("empty prompt set: give the concept's prompts to erase")
    return prompts


class ANTStep:
    """One ANT update's forward work, shared by training and by saliency-map collection.

    With a :class:`~unlearnkit.methods.parts.trajectory_bank.TrajectoryBank` the frozen points and targets are read from it
    (one trainable UNet call per update); without, a frozen trajectory is sampled for the update's prompt and seed.
    """

    def __init__(self, world, delta: TrainableDelta | None, config: ANTConfig, bank: TrajectoryBank | None = None):
        self.world, self.delta, self.config, self.bank = world, delta, config, bank
        self.unet = world.pipe.unet
        self.uncond = world.embeddings([""])
        self.sampler = SamplerSettings(config.num_inference_steps, config.trajectory_guidance)

    def _frozen(self):
        from contextlib import nullcontext

        return self.delta.frozen() if self.delta is not None else nullcontext()

    def _frozen_points(self, prompts: list[str], seeds: list[int], steps) -> tuple[torch.Tensor, ...]:
        """``x, t, ε*(x, c), ε*(x, ∅)`` at ``steps`` of one fresh frozen trajectory per ``(prompt, seed)``."""
        cfg = self.config
        with self._frozen(), torch.no_grad():
            _, snaps = sample_latents(self.world.pipe, prompts, seeds, self.sampler,
                                      guidance=cfg_guidance(cfg.trajectory_guidance), embeddings=self.world.embeddings,
                                      snapshot_steps=steps, stop_at_last_snapshot=True)
            x = torch.cat([snaps[s][0] for s in steps])
            t = torch.cat([torch.full((len(prompts),), snaps[s][1], device=x.device) for s in steps])
            c = self.world.embeddings(prompts).repeat(len(steps), 1, 1)
            frozen_cond, frozen_uncond = predict_eps(self.unet, x, t, c, self.uncond)
        return x, t, frozen_cond, frozen_uncond

    def loss(self, prompt: str, seed: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Eq. (3) for one update; with a bank, ``prompt``/``seed`` are ignored and ``batch_size`` runs are drawn."""
        cfg = self.config
        w = cfg.weights
        s_early, s_late = draw_stage_steps(cfg.t_prime, cfg.num_inference_steps, generator, w.erase_span,
                                           cfg.stage_split)
        steps = (s_early, s_late) if w.needs_early else (s_late,)
        if self.bank is None:
            prompts = [prompt] * cfg.batch_size
            x, t, frozen_cond, frozen_uncond = self._frozen_points(prompts, [seed + i for i in range(cfg.batch_size)],
                                                                   steps)
        else:
            runs = torch.randperm(len(self.bank), generator=generator)[:cfg.batch_size].tolist()
            prompts = [self.bank.prompts[r] for r in runs]
            x, t, frozen_cond, frozen_uncond = self.bank.points(runs, steps, self.unet.device)
        c = self.world.embeddings(prompts).to(x.device).repeat(len(steps), 1, 1)
        if w.needs_uncond:
            eps_cond, eps_uncond = predict_eps(self.unet, x, t, c, self.uncond)
        else:
            eps_cond, eps_uncond = predict_eps(self.unet, x, t, c), None
        b = cfg.batch_size

        def late(v):
            return None if v is None else v[-b:]

        def early(v):
            return None if (v is None or not w.needs_early) else v[:b]

        terms = trajectory_loss_terms(
            w, eps_cond_late=late(eps_cond), frozen_cond_late=late(frozen_cond), frozen_uncond_late=late(frozen_uncond),
            eps_cond_early=early(eps_cond), frozen_cond_early=early(frozen_cond),
            frozen_uncond_early=early(frozen_uncond), eps_uncond_early=early(eps_uncond),
            eps_uncond_late=late(eps_uncond))
        terms["t_early"] = t[0].float().cpu() if w.needs_early else torch.tensor(float("nan"))
        terms["t_late"] = t[-1].float().cpu()
        return terms


def saliency_mask(world, concept: Concept | None = None, prompts=None, config: ANTConfig = ANTConfig(),
                  saliency: SaliencyConfig = SaliencyConfig()) -> tuple[Mask, list[int]]:
    """ANT Eq. (4)–(5): the intersection over prompts × seeds of thresholded |∇θ L| at the original model.

    Returns ``(M*, active counts after each intersected map)`` — the counts are ANT Fig. 4's curve.
    """
    if saliency.augment is not None and prompts is None:
        if concept is None:
            raise ValueError("prompt augmentation needs the concept")
        prompts = world.augmented_prompts(concept, saliency.augment, saliency.augment_seed)
    prompts = _concept_prompts(concept, prompts)[: saliency.max_prompts]
    params = select_parameters(world.pipe.unet, config.scope)
    step = ANTStep(world, None, config)

    def maps():
        for i, prompt in enumerate(prompts):
            for seed in saliency.seeds:
                for p in params.values():
                    p.grad = None
                with torch.enable_grad():
                    for p in params.values():
                        p.requires_grad_(True)
                    step.loss(prompt, seed, torch.Generator().manual_seed(seed * 1000 + i))["loss"].backward()
                yield saliency_map({n: p.grad for n, p in params.items()}, saliency.threshold)
        for p in params.values():
            p.grad = None

    return intersect_saliency_maps(maps())


def trajectory_bank_for(world, concept: Concept, config: ANTConfig, prompts=None) -> TrajectoryBank:
    """The ``config.trajectory_bank`` frozen runs :func:`fit` reads (run ``j``: prompt ``j mod #prompts``, seed
    ``config.seed + j``), sampled from the world's current (original) model. Runs that share the concept, prompts
    and trajectory settings can share one bank (``fit(..., bank=...)``)."""
    if config.trajectory_bank is None:
        raise ValueError("config.trajectory_bank is None: this configuration samples fresh trajectories")
    prompts = _concept_prompts(concept, prompts)
    runs = [(prompts[j % len(prompts)], config.seed + j) for j in range(config.trajectory_bank)]
    return sample_trajectory_bank(world, {concept.name: runs}, config.num_inference_steps,
                                  config.trajectory_guidance)[concept.name]


def fit(world, concept: Concept, config: ANTConfig = ANTConfig(), mask: Mask | None = None, prompts=None,
        progress: bool = True, bank: TrajectoryBank | None = None) -> tuple[Edit, list[dict]]:
    """Erase ``concept`` with ANT; return the Edit and a per-iteration log. The world's model is left unchanged.

    ``mask`` is M* (from :func:`saliency_mask`); ``None`` trains every parameter of ``config.scope``
    (ANT Table 5 "whole UNet").
    """
    prompts = _concept_prompts(concept, prompts)
    unet = world.pipe.unet
    scoped = select_parameters(unet, config.scope)
    if mask is not None:
        check_mask_in_scope(mask, scoped, config.scope)
        mask = nonempty(mask)
        if not mask:
            raise ValueError("the saliency mask selects no parameter: lower gamma or raise keep_fraction")
    names = list(mask) if mask is not None else list(scoped)
    generator = torch.Generator().manual_seed(config.seed)
    log = []
    if config.trajectory_bank is not None and bank is None:   # before any parameter moves: θ*'s trajectories
        bank = trajectory_bank_for(world, concept, config, prompts)
    with training_in_place(unet, names, mask) as delta:
        opt = torch.optim.Adam(list(delta.params.values()), lr=config.lr)
        step = ANTStep(world, delta, config, bank)
        for it in tqdm(range(config.iterations), desc=f"ANT {concept.name}", disable=not progress):
            prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
            seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
            terms = step.loss(prompt, seed, generator)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            delta.mask_gradients()
            opt.step()
            log.append({k: float(v.detach()) for k, v in terms.items()})
        edit = delta.to_edit(name=f"ant:{concept.name}",
                             metadata={"method": "ant", "concept": concept.name, "config": config.as_dict(),
                                       "masked": mask is not None})
    return edit, log


def erase(world, concept: Concept, config: ANTConfig = ANTConfig(), saliency: SaliencyConfig | None = SaliencyConfig(),
          prompts=None, progress: bool = True, bank: TrajectoryBank | None = None) -> tuple[Edit, dict]:
    """ANT end to end: the saliency map M* (Eq. 4–5; ``saliency=None`` trains the whole scope) then masked training.

    Returns the Edit and an info dict with the active-parameter curve (ANT Fig. 4), the mask size and the log.
    """
    info: dict = {"scope_parameters": sum(p.numel() for p in select_parameters(world.pipe.unet, config.scope).values())}
    mask = None
    if saliency is not None:
        mask, counts = saliency_mask(world, concept, prompts, config, saliency)
        info["active_curve"] = counts
        info["active_parameters"] = counts[-1]
    else:
        info["active_parameters"] = info["scope_parameters"]
    if config.trajectory_bank is not None and bank is None:
        bank = trajectory_bank_for(world, concept, config, prompts)
    edit, log = fit(world, concept, config, mask=mask, prompts=prompts, progress=progress, bank=bank)
    info["trajectory_bank"] = bank
    edit.metadata["active_parameters"] = info["active_parameters"]
    info["log"] = log
    return edit, info
