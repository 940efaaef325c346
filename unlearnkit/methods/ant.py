"""ANT — Auto-steering deNoising Trajectories: the trajectory-aware loss Eq. (3) inside the saliency map M* Eq. (4)–(6).

Per update one frozen DDIM trajectory from a drawn seed gives ``z₁`` (entering ``s₁ > t′``) and ``z₂`` (entering
``s₂ ≤ t′``); frozen predictions come from the model with the edit switched off, trainable ones from one UNet call;
``L`` = Eq. (3); ``∇θ ← M* ⊙ ∇θ``; Adam. ``M*`` intersects thresholded gradient maps over N_c prompts × N_s seeds.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps, validate_paper_step
from unlearnkit.core.edits import Edit, TrainableDelta, training_in_place
from unlearnkit.core.errors import BadTypeError, UnlearnkitError
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.core.validation import check_choice, check_integer, check_number, check_seed, check_seeds
from unlearnkit.methods.contract import ONE, Erasure, Method, only_concept
from unlearnkit.methods.parts.losses.trajectory import (STAGE_SPLITS, TrajectoryLossWeights, draw_stage_steps,
                                                        trajectory_loss_terms)
from unlearnkit.methods.parts.saliency import (Mask, SaliencyThreshold, check_mask_in_scope, count_active,
                                               intersect_saliency_maps, nonempty, saliency_map)
from unlearnkit.methods.parts.trajectory_bank import TrajectoryBank, sample_trajectory_bank
from unlearnkit.sampling import SamplerSettings, cfg_guidance, sample_latents

__all__ = ["ANTConfig", "SaliencyConfig", "ANTStep", "saliency_mask", "trajectory_bank_for", "prepare", "fit",
           "METHODS"]

WEIGHT_NAMES = ("preserve", "lambda1", "lambda2", "lambda3", "eta", "erase_span")


@dataclass(frozen=True)
class SaliencyConfig:
    """The augmentation-enhanced saliency map, ANT Eq. (4)–(5): N_c prompts × N_s seeds, each thresholded, intersected.
    ``augment``: N_c prompts from the world's seeded prompt augmentation (None: the concept's own)."""

    threshold: SaliencyThreshold = field(default_factory=lambda: SaliencyThreshold(keep_fraction=0.5))
    seeds: tuple[int, ...] = (24, 42, 98, 403, 3407)   # the seeds of the ANT release
    max_prompts: int | None = None
    augment: int | None = None
    augment_seed: int = 0

    def __post_init__(self):
        if not isinstance(self.threshold, SaliencyThreshold):
            raise BadTypeError(f"threshold={self.threshold!r}: expected a SaliencyThreshold")
        if not check_seeds(self.seeds, "seeds"):
            raise UnlearnkitError(f"seeds={self.seeds!r} is empty: give at least one seed")
        check_integer(self.max_prompts, "max_prompts", minimum=1, allow_none=True)
        check_integer(self.augment, "augment", minimum=1, allow_none=True)
        check_seed(self.augment_seed, "augment_seed")

    @classmethod
    def from_hyperparameters(cls, **saliency) -> "SaliencyConfig":
        """From flat settings: ``seeds`` as a list, ``gamma`` / ``keep_fraction`` / ``select`` for the threshold
        (the default threshold when none is given)."""
        if "seeds" in saliency:
            saliency["seeds"] = tuple(saliency["seeds"])
        if {"gamma", "keep_fraction", "select"} & set(saliency):
            saliency["threshold"] = SaliencyThreshold(gamma=saliency.pop("gamma", None),
                                                      keep_fraction=saliency.pop("keep_fraction", None),
                                                      select=saliency.pop("select", "top"))
        return cls(**saliency)


@dataclass(frozen=True)
class ANTConfig:
    """ANT hyperparameters; defaults are ANT Table 6's NSFW row (lr 5e-4, 250 iterations, λ = (1, 0.5, 0.5), t′ = 43).

    ``saliency``: the map M* (None: train every parameter of ``scope``, ANT Table 5 "whole UNet");
    ``trajectory_bank``: J frozen runs sampled once and read by every update (None: a fresh trajectory per update,
    as the paper does); ``trajectory_guidance``: the CFG of the frozen trajectories (ANT Multiple 7.5, Single 3).
    """

    lr: float = 5e-4
    iterations: int = 250
    weights: TrajectoryLossWeights = field(default_factory=TrajectoryLossWeights)
    t_prime: int = 43
    stage_split: str = "paper"
    scope: str = "unet"
    batch_size: int = 1
    num_inference_steps: int = 50
    trajectory_guidance: float = 7.5
    seed: int = 0
    trajectory_bank: int | None = None
    saliency: SaliencyConfig | None = None

    def __post_init__(self):
        check_number(self.lr, "lr", positive=True)
        check_integer(self.iterations, "iterations", minimum=1)
        if not isinstance(self.weights, TrajectoryLossWeights):
            raise BadTypeError(f"weights={self.weights!r}: expected TrajectoryLossWeights")
        check_integer(self.num_inference_steps, "num_inference_steps", minimum=2)
        validate_paper_step(self.t_prime, self.num_inference_steps, "t_prime")
        if not (1 <= self.t_prime < self.num_inference_steps):
            raise UnlearnkitError(f"t_prime={self.t_prime!r} must leave both stages non-empty: "
                                  f"expected 1 <= t_prime < {self.num_inference_steps}")
        check_choice(self.stage_split, "stage_split", STAGE_SPLITS)
        check_choice(self.scope, "scope", scope_names())
        check_integer(self.batch_size, "batch_size", minimum=1)
        check_number(self.trajectory_guidance, "trajectory_guidance")
        check_seed(self.seed)
        check_integer(self.trajectory_bank, "trajectory_bank", minimum=self.batch_size, allow_none=True)
        if self.saliency is not None and not isinstance(self.saliency, SaliencyConfig):
            raise BadTypeError(f"saliency={self.saliency!r}: expected a SaliencyConfig or None")

    @classmethod
    def from_hyperparameters(cls, saliency: dict | None = None, **hyperparameters) -> "ANTConfig":
        """From flat hyperparameters: the loss weights by their Eq. (3) names (``lambda1``, ``eta``, …) and
        ``saliency`` as a dict of :meth:`SaliencyConfig.from_hyperparameters` settings (``{}``: the default map)."""
        weights = TrajectoryLossWeights(**{k: v for k, v in hyperparameters.items() if k in WEIGHT_NAMES})
        rest = {k: v for k, v in hyperparameters.items() if k not in WEIGHT_NAMES}
        if isinstance(saliency, dict):
            saliency = SaliencyConfig.from_hyperparameters(**saliency)
        return cls(weights=weights, saliency=saliency, **rest)

    def as_dict(self) -> dict:
        return asdict(self)


def _concept_prompts(concept: Concept | None, prompts) -> list[str]:
    prompts = list(prompts if prompts is not None else (concept.prompts if concept is not None else ()))
    if not prompts:
        raise ValueError("empty prompt set: give the concept's prompts to erase")
    return prompts


class ANTStep:
    """One ANT update's forward work (Eq. 3), shared by training, saliency-map collection and MACE's ANT objective.

    With a :class:`~unlearnkit.methods.parts.trajectory_bank.TrajectoryBank` the frozen points and targets are read
    from it (one trainable UNet call per update); without, a frozen trajectory is sampled for the update's prompt
    and seed. ``delta`` switches the edit off for the frozen model (None: the model is the frozen one).
    """

    def __init__(self, world, delta: TrainableDelta | None, config: ANTConfig, bank: TrajectoryBank | None = None):
        self.world, self.delta, self.config, self.bank = world, delta, config, bank
        self.unet = world.pipe.unet
        self.uncond = world.embeddings([""])
        self.sampler = SamplerSettings(config.num_inference_steps, config.trajectory_guidance)

    def _frozen(self):
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

    def _draw_steps(self, generator: torch.Generator) -> tuple[int, ...]:
        cfg, w = self.config, self.config.weights
        s_early, s_late = draw_stage_steps(cfg.t_prime, cfg.num_inference_steps, generator, w.erase_span,
                                           cfg.stage_split)
        return (s_early, s_late) if w.needs_early else (s_late,)

    def _terms(self, prompts: list[str], x, t, frozen_cond, frozen_uncond, steps) -> dict[str, torch.Tensor]:
        """The trainable predictions at the frozen points in one UNet call, and the Eq. (3) terms."""
        w = self.config.weights
        c = self.world.embeddings(prompts).to(x.device).repeat(len(steps), 1, 1)
        if w.needs_uncond:
            eps_cond, eps_uncond = predict_eps(self.unet, x, t, c, self.uncond)
        else:
            eps_cond, eps_uncond = predict_eps(self.unet, x, t, c), None
        b = len(prompts)

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

    def loss(self, prompt: str, seed: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Eq. (3) for one update; with a bank, ``prompt``/``seed`` are ignored and ``batch_size`` runs are drawn
        after the steps."""
        cfg = self.config
        steps = self._draw_steps(generator)
        if self.bank is None:
            prompts = [prompt] * cfg.batch_size
            points = self._frozen_points(prompts, [seed + i for i in range(cfg.batch_size)], steps)
        else:
            runs = torch.randperm(len(self.bank), generator=generator)[:cfg.batch_size].tolist()
            prompts = [self.bank.prompts[r] for r in runs]
            points = self.bank.points(runs, steps, self.unet.device)
        return self._terms(prompts, *points, steps)

    def loss_on_one_run(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Eq. (3) on one bank run drawn before the steps (MACE-fusion's per-concept LoRA updates)."""
        run = int(torch.randint(len(self.bank.prompts), (1,), generator=generator))
        steps = self._draw_steps(generator)
        return self._terms([self.bank.prompts[run]], *self.bank.points([run], steps, self.unet.device), steps)


def saliency_mask(world, concept: Concept | None = None, prompts=None, config: ANTConfig = ANTConfig(),
                  saliency: SaliencyConfig | None = None) -> tuple[Mask, list[int]]:
    """M*, ANT Eq. (4)–(5): the intersection over prompts × seeds of thresholded |∇θ L| at the original model.

    ``saliency`` defaults to ``config.saliency`` (or the default map). Returns ``(M*, active counts after each
    intersected map)`` — the counts are ANT Fig. 4's curve.
    """
    saliency = saliency or config.saliency or SaliencyConfig()
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


def prepare(world, concepts, config: ANTConfig = ANTConfig(), prompts=None) -> dict:
    """``mask`` (with ``config.saliency``) and ``bank`` (with ``config.trajectory_bank``) for :func:`fit`, from the
    world's current (original) model."""
    concept = only_concept(concepts, "ANT")
    inputs = {}
    if config.saliency is not None:
        inputs["mask"], _ = saliency_mask(world, concept, prompts, config)
    if config.trajectory_bank is not None:
        inputs["bank"] = trajectory_bank_for(world, concept, config, prompts)
    return inputs


def _train(world, concept, config: ANTConfig, mask: Mask | None, prompts, progress: bool,
           bank: TrajectoryBank | None) -> tuple[Edit, list[dict]]:
    """Masked training with Eq. (3); the world's model is left unchanged."""
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
        for _ in tqdm(range(config.iterations), desc=f"ANT {concept.name}", disable=not progress):
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


def fit(world, concepts, config: ANTConfig = ANTConfig(), *, progress: bool = False, mask: Mask | None = None,
        prompts=None, bank: TrajectoryBank | None = None) -> Erasure:
    """ANT end to end: M* (``config.saliency``, unless ``mask`` is given) then masked training on the concept.
    The world's model is left unchanged.

    ``mask``: a precomputed M*; ``prompts``: training prompts (default the concept's); ``bank``: a frozen-trajectory
    bank of an earlier run with the same settings (``info["trajectory_bank"]``). ``info``: ``scope_parameters``,
    ``active_parameters``, ``active_curve`` (ANT Fig. 4, when M* is computed here) and ``trajectory_bank``.
    """
    concept = only_concept(concepts, "ANT")
    info: dict = {"scope_parameters": sum(p.numel() for p in select_parameters(world.pipe.unet, config.scope).values())}
    if mask is None and config.saliency is not None:
        mask, counts = saliency_mask(world, concept, prompts, config)
        info["active_curve"] = counts
        info["active_parameters"] = counts[-1]
    else:
        info["active_parameters"] = info["scope_parameters"] if mask is None else count_active(mask)
    if config.trajectory_bank is not None and bank is None:
        bank = trajectory_bank_for(world, concept, config, prompts)
    edit, log = _train(world, concept, config, mask, prompts, progress, bank)
    info["trajectory_bank"] = bank
    edit.metadata["active_parameters"] = info["active_parameters"]
    return Erasure([edit], log, info)


METHODS = (
    Method("ant", "ANT", "ANT: trajectory-aware loss inside an augmentation-enhanced saliency map (ANT Eq. 3-6)",
           ANTConfig, frozenset({ONE}), fit, build_config=ANTConfig.from_hyperparameters, prepare=prepare),
)
