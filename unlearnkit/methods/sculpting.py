"""Sculpting Memory (Li et al., ICCV 2025): concepts forgotten in sequence with a dynamic gradient mask, Eq. (1)–(4),
and a concept-aware loss, Eq. (12).

One stage per concept (a fresh Adam; the teacher is the model after the previous concept, i.e. this stage's delta
switched off): warm-up steps accumulate gradients of the denoising loss Eq. (6) to initialise ``M_dyn`` (Eq. 2–3);
then each step pairs a concept image with a superclass image at the same ``t``, takes
``L = L_unlearn + α L_align + β L_reg``, masks the gradient (Eq. 1) and every ``update_freq`` steps drops/grows the
mask with τ(t) (Eq. 4). Training images of each concept and its superclass are drawn once from the original model.
Defaults are the paper's (§4.1, Table 8, Fig. 5); :meth:`SculptingConfig.released` is the authors' release where it
differs.
"""
from __future__ import annotations

import math
import tempfile
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps, q_sample
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.core.validation import check_choice, check_flag, check_integer, check_number, check_seed
from unlearnkit.methods.contract import ONE, SEQUENTIAL, Erasure, Method
from unlearnkit.methods.parts.dynamic_mask import (ACCUMULATE_MODES, RANKINGS, TAU_SCHEDULES, DynamicMask,
                                                   keep_fraction_from_sparsity)
from unlearnkit.methods.parts.losses.concept_aware import concept_aware_loss_terms, denoising_loss
from unlearnkit.methods.parts.stages import CHECKPOINT_POLICIES, EpochResult, Stage, run_sequential
from unlearnkit.sampling import SamplerSettings, check_sampler
from unlearnkit.sampling.cache import generate_cached, model_fingerprint

__all__ = [
    "SculptingConfig",
    "MINI_WORLD",
    "ClassLatents",
    "ConceptTrainingData",
    "superclass_prompts",
    "validate_concepts",
    "encode_images",
    "training_data",
    "SculptingStage",
    "prepare",
    "fit",
    "METHODS",
]

TARGET_MODELS = ("current", "frozen")
LR_SCHEDULES = ("constant", "one_cycle")
VAE_POSTERIORS = ("sample", "mean")
MINI_IMAGES_PER_CLASS = 40
SUPERCLASS_SEED_OFFSET = 1_000_000   # superclass images never share an initial noise with concept images
# lr 1e-4, measured on the shipped mini world (tench then church, 24 images of "a photo of a tench" per model):
# tench detection 0.92 → 0.46 at lr 3e-6, → 0.0 at 3e-5 and 1e-4 while "truck" stays ≥ 0.96; 1e-4 also erases
# church fully (3e-5 leaves 0.08)
MINI_WORLD = dict(images_per_class=MINI_IMAGES_PER_CLASS, warmup_steps=20, update_freq=40, lr=1e-4)


@dataclass(frozen=True)
class SculptingConfig:
    """Sculpting Memory hyperparameters, paper names and paper defaults (SM §4.1, App. A.2, Fig. 5, Table 5).

    Optimisation: ``lr``, ``batch_size``, ``epochs`` (one epoch = one pass over a concept's images);
    ``lr_schedule="one_cycle"`` is the release's OneCycleLR (max_lr = lr, cycle_momentum on).
    Loss (Eq. 12): ``alpha`` (L_align), ``beta`` (L_reg), ``kd`` (False = the release: L_reg dropped, β inert),
    ``target_model`` — which model gives the L_unlearn target ``sg[ε(x_t, c_s)]``: ``"current"`` (release, a moving
    target) or ``"frozen"`` (the checkpoint at the start of the stage, i.e. the teacher).
    Mask (§3.2): ``keep_fraction`` (density; ``sparsity`` = 1 − keep_fraction, see
    :mod:`unlearnkit.methods.parts.dynamic_mask`), ``update_freq`` (None = fixed mask), ``r_m`` (Eq. 4; the release's 0.2),
    ``warmup_steps``, ``accumulate``, ``ranking``, ``tau_per``, ``update_window``, ``zero_dropped_optimizer_state``,
    ``mask_bias`` (False = the release: biases in scope train unmasked), ``scope`` (``xattn`` | ``xattn_kv`` |
    ``unet``, Table 5's rows).
    Data (App. A.1): ``images_per_class`` images of each concept and of its superclass (paper 100; the mini world's
    preset uses 40, :meth:`for_mini_world`), drawn with ``sampler`` (None = the world's sampler) and seeds
    ``seed, seed+1, …``; ``vae_posterior`` — sample the VAE posterior per batch (release) or use its mean.
    ``checkpoint``: ``"last"`` (the paper describes no selection) or ``"best_train_loss"`` (release).
    """

    lr: float = 3e-6
    batch_size: int = 2
    epochs: int = 10
    lr_schedule: str = "constant"
    alpha: float = 0.25
    beta: float = 0.25
    kd: bool = True
    target_model: str = "current"
    keep_fraction: float = 0.5
    update_freq: int | None = 100
    r_m: float = 0.2
    warmup_steps: int = 50
    accumulate: str = "abs_of_sum"
    ranking: str = "per_tensor"
    tau_per: str = "step"
    update_window: float = 0.8
    zero_dropped_optimizer_state: bool = False
    mask_bias: bool = True
    scope: str = "xattn"
    images_per_class: int = 100
    sampler: SamplerSettings | None = None
    vae_posterior: str = "sample"
    checkpoint: str = "last"
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "epochs", "warmup_steps", "images_per_class"):
            check_integer(getattr(self, name), name, minimum=1)
        check_number(self.lr, "lr", positive=True)
        check_number(self.alpha, "alpha", minimum=0)
        check_number(self.beta, "beta", minimum=0)
        check_flag(self.kd, "kd")
        # sparsity = 1 − keep_fraction; 0 and 1 leave nothing to rank
        check_number(self.keep_fraction, "keep_fraction", above=0, below=1)
        check_integer(self.update_freq, "update_freq", minimum=1, allow_none=True)
        check_number(self.r_m, "r_m", minimum=0, maximum=1)
        check_number(self.update_window, "update_window", above=0, maximum=1)
        for name, allowed in (("lr_schedule", LR_SCHEDULES), ("target_model", TARGET_MODELS),
                              ("accumulate", ACCUMULATE_MODES), ("ranking", RANKINGS), ("tau_per", TAU_SCHEDULES),
                              ("vae_posterior", VAE_POSTERIORS), ("checkpoint", CHECKPOINT_POLICIES),
                              ("scope", tuple(scope_names()))):
            check_choice(getattr(self, name), name, allowed)
        check_flag(self.zero_dropped_optimizer_state, "zero_dropped_optimizer_state")
        check_flag(self.mask_bias, "mask_bias")
        if self.sampler is not None:
            check_sampler(self.sampler)
        check_seed(self.seed)

    # --- the paper's wording and the presets -----------------------------------------------------------------------
    @property
    def sparsity(self) -> float:
        """The paper's "sparsity": fraction of gradient entries masked out, ``1 − keep_fraction``."""
        return 1.0 - self.keep_fraction

    @classmethod
    def from_sparsity(cls, sparsity: float, **hyperparameters) -> "SculptingConfig":
        """Config at the paper's "sparsity" level (SM Table 5): ``keep_fraction = 1 − sparsity``."""
        if "keep_fraction" in hyperparameters:
            raise ValueError("give sparsity or keep_fraction, not both")
        return cls(keep_fraction=keep_fraction_from_sparsity(sparsity), **hyperparameters)

    @classmethod
    def released(cls, **hyperparameters) -> "SculptingConfig":
        """The released training script's behaviour: L_reg computed and
        discarded (``kd=False``), τ per epoch, OneCycleLR, best-training-loss checkpoint, to_out bias unmasked."""
        preset = dict(kd=False, tau_per="epoch", lr_schedule="one_cycle", checkpoint="best_train_loss",
                      mask_bias=False)
        return cls(**{**preset, **hyperparameters})

    @classmethod
    def for_mini_world(cls, **hyperparameters) -> "SculptingConfig":
        """The paper's schedule scaled to the mini world (:data:`MINI_WORLD`): 40 images per class (batch 2 → 20
        steps per epoch, 10 epochs), warm-up one epoch and a mask update every two epochs as in the paper, lr 1e-4."""
        return cls(**{**MINI_WORLD, **hyperparameters})

    def steps_per_epoch(self, num_concept_images: int) -> int:
        return math.ceil(num_concept_images / self.batch_size)

    def total_steps(self, num_concept_images: int) -> int:
        """``T_end`` of a stage: every step, warm-up included."""
        return self.epochs * self.steps_per_epoch(num_concept_images)

    def as_dict(self) -> dict:
        return asdict(self)


# --- training data (App. A.1) ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassLatents:
    """VAE posteriors of one class's training images: ``mean``/``std`` ``[N, C, h, w]`` (already multiplied by the
    VAE scaling factor) and the prompt of each image. ``std = 0`` makes fixed latents."""

    mean: torch.Tensor
    std: torch.Tensor
    prompts: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.mean, torch.Tensor) or self.mean.ndim != 4 or len(self.mean) == 0:
            raise ValueError("mean must be a non-empty [N, C, h, w] tensor")
        if not isinstance(self.std, torch.Tensor) or self.std.shape != self.mean.shape:
            raise ValueError(f"std must have the shape of mean {tuple(self.mean.shape)}")
        prompts = (self.prompts,) if isinstance(self.prompts, str) else tuple(self.prompts)
        if len(prompts) != len(self.mean) or not all(isinstance(p, str) and p for p in prompts):
            raise ValueError(f"give one non-empty prompt per latent: {len(self.mean)} latents, {len(prompts)} prompts")
        object.__setattr__(self, "prompts", prompts)

    @classmethod
    def fixed(cls, latents: torch.Tensor, prompts: Sequence[str]) -> "ClassLatents":
        """Latents used as they are (no posterior noise)."""
        return cls(latents, torch.zeros_like(latents), tuple(prompts))

    def __len__(self) -> int:
        return len(self.mean)

    def to(self, device, dtype=None) -> "ClassLatents":
        return ClassLatents(self.mean.to(device, dtype), self.std.to(device, dtype), self.prompts)

    def draw(self, indices: torch.Tensor, generator: torch.Generator, posterior: str = "sample") -> torch.Tensor:
        """``x₀`` for ``indices``: a posterior sample ``mean + std·n`` (release) or the posterior mean."""
        idx = indices.to(self.mean.device)
        mean = self.mean[idx]
        if posterior == "mean":
            return mean
        n = torch.randn(mean.shape, generator=generator).to(mean)
        return mean + self.std[idx] * n


@dataclass(frozen=True)
class ConceptTrainingData:
    """D_forget (images of the concept) and D_super (images of its superclass) for one concept (SM §3.3)."""

    concept: ClassLatents
    superclass: ClassLatents

    def to(self, device, dtype=None) -> "ConceptTrainingData":
        return ConceptTrainingData(self.concept.to(device, dtype), self.superclass.to(device, dtype))


def superclass_prompts(concept: Concept) -> tuple[str, ...]:
    """The prompts of the concept's superclass ``C_s``: its anchor prompts, or the anchor itself."""
    return tuple(concept.anchor_prompts) or (concept.anchor,)


def validate_concepts(concepts) -> list[Concept]:
    """A non-empty list of distinct Concepts, each with a superclass (SM maps a concept onto it, §3.3)."""
    if isinstance(concepts, Concept):
        raise TypeError(f"concepts must be a list of Concepts (the forgetting order), got one Concept "
                        f"{concepts.name!r}: wrap it in a list")
    concepts = list(concepts)
    if not concepts:
        raise ValueError("concepts is empty: give at least one concept to forget")
    for c in concepts:
        if not isinstance(c, Concept):
            raise TypeError(f"concepts must be Concept objects, got {type(c).__name__}: {c!r}")
        if not c.anchor.strip():
            raise ValueError(f"concept {c.name!r} has no superclass (anchor={c.anchor!r}): Sculpting Memory maps "
                             f"each concept onto its superclass or opposing class; give Concept(anchor=…)")
    names = [c.name for c in concepts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"concepts repeat {duplicates}: each concept is forgotten once")
    return concepts


@torch.no_grad()
def encode_images(vae, images: np.ndarray, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior of uint8 images ``[N, H, W, 3]``: ``(mean, std)`` ``[N, C, h, w]``, both multiplied by
    ``vae.config.scaling_factor``."""
    scale = vae.config.scaling_factor
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)
        x = (x.float() / 127.5 - 1.0).to(vae.device, vae.dtype)
        posterior = vae.encode(x).latent_dist
        means.append((posterior.mean * scale).float().cpu())
        stds.append((posterior.std * scale).float().cpu())
    return torch.cat(means), torch.cat(stds)


def _class_latents(world, prompts: Sequence[str], count: int, settings: SamplerSettings, first_seed: int,
                   cache_dir: Path, model_id: str) -> ClassLatents:
    chosen = [prompts[i % len(prompts)] for i in range(count)]
    seeds = [first_seed + i for i in range(count)]
    images = generate_cached(world.pipe, chosen, seeds, settings, cache_dir, embeddings=world.embeddings,
                             progress=False, model_id=model_id)
    mean, std = encode_images(world.pipe.vae, images)
    return ClassLatents(mean, std, tuple(chosen))


def training_data(world, concepts: Sequence[Concept], config: SculptingConfig = SculptingConfig(),
                  image_cache_dir: str | Path | None = None) -> dict[str, ConceptTrainingData]:
    """D_forget and D_super of every concept, App. A.1: ``images_per_class`` images each from the world's current
    (call it on the original) model, prompts cycled (``concept.prompts``; superclass: :func:`superclass_prompts`).

    Images go through the PNG cache in ``image_cache_dir`` (a temporary folder when None) and are encoded once.
    The release adds the class name as negative prompt for superclass images; our sampler has no negative prompt.
    """
    concepts = validate_concepts(concepts)
    settings = config.sampler or world.sampler
    model_id = model_fingerprint(world.pipe)
    context = (tempfile.TemporaryDirectory(prefix="sm-images-") if image_cache_dir is None
               else nullcontext(image_cache_dir))
    data = {}
    with context as folder:
        for concept in concepts:
            data[concept.name] = ConceptTrainingData(
                _class_latents(world, concept.prompts, config.images_per_class, settings, config.seed,
                               Path(folder), model_id),
                _class_latents(world, superclass_prompts(concept), config.images_per_class, settings,
                               config.seed + SUPERCLASS_SEED_OFFSET, Path(folder), model_id))
    return data


# --- one stage ----------------------------------------------------------------------------------------------------
class SculptingStage:
    """Stage trainer for :func:`~unlearnkit.methods.parts.stages.run_sequential`: forgets ``stage.concept`` (steps 2–3 of the
    module docstring), yielding one :class:`~unlearnkit.methods.parts.stages.EpochResult` per epoch.

    The epoch's ``train_loss`` (checkpoint selection) is the mean of L_unlearn over its steps, warm-up steps counting
    their denoising loss — the release's selection statistic.
    """

    def __init__(self, world, config: SculptingConfig, data: Mapping[str, ConceptTrainingData], progress: bool = False):
        self.config, self.data, self.progress = config, data, progress
        self.unet = world.pipe.unet
        self.noise_scheduler = world.pipe.scheduler
        self.embeddings = world.embeddings

    def _embed(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.embeddings(list(prompts)).to(self.unet.device, self.unet.dtype)

    def _noised(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator):
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        return q_sample(self.noise_scheduler, x0, t, noise), noise

    def _draw_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.noise_scheduler.config.num_train_timesteps, (n,),
                             generator=generator).to(self.unet.device)

    def warmup_loss(self, data: ConceptTrainingData, idx: torch.Tensor, generator: torch.Generator) -> dict:
        """Eq. (6) on concept images — the warm-up objective whose gradients seed the mask (Eq. 2)."""
        x0 = data.concept.draw(idx, generator, self.config.vae_posterior)
        t = self._draw_timesteps(len(idx), generator)
        x_t, noise = self._noised(x0, t, generator)
        eps = predict_eps(self.unet, x_t, t, self._embed([data.concept.prompts[i] for i in idx.tolist()]))
        loss = denoising_loss(eps, noise)
        return {"loss": loss, "unlearn": loss, "t": t.float().mean()}

    def concept_aware_loss(self, stage: Stage, data: ConceptTrainingData, idx: torch.Tensor, sidx: torch.Tensor,
                           paired_superclass: Mapping[str, str], generator: torch.Generator) -> dict:
        """Eq. (12) for one batch: no-grad calls grouped per model, then one grad call."""
        cfg = self.config
        x0 = data.concept.draw(idx, generator, cfg.vae_posterior)
        xs0 = data.superclass.draw(sidx, generator, cfg.vae_posterior)
        t = self._draw_timesteps(len(idx), generator)       # the release reuses t for the superclass batch
        x_t, _ = self._noised(x0, t, generator)
        xs_t, noise_s = self._noised(xs0, t, generator)
        concept_prompts = [data.concept.prompts[i] for i in idx.tolist()]
        c = self._embed(concept_prompts)
        c_s_paired = self._embed([paired_superclass[p] for p in concept_prompts])
        c_s = self._embed([data.superclass.prompts[i] for i in sidx.tolist()])
        b = len(idx)
        eps_target = eps_teacher = None
        with torch.no_grad():
            if cfg.target_model == "current":
                eps_target = predict_eps(self.unet, x_t, t, c_s_paired)
            frozen_x, frozen_c = [], []
            if cfg.target_model == "frozen":
                frozen_x.append(x_t)
                frozen_c.append(c_s_paired)
            if cfg.kd:
                frozen_x.append(xs_t)
                frozen_c.append(c_s)
            if frozen_x:
                with stage.delta.frozen():  # the teacher: the model after the previous concept
                    eps_frozen = predict_eps(self.unet, torch.cat(frozen_x), t.repeat(len(frozen_x)),
                                             torch.cat(frozen_c))
                if cfg.target_model == "frozen":
                    eps_target = eps_frozen[:b]
                if cfg.kd:
                    eps_teacher = eps_frozen[-b:]
        eps = predict_eps(self.unet, torch.cat([x_t, xs_t]), torch.cat([t, t]), torch.cat([c, c_s]))
        eps_concept, eps_superclass = eps[:b], eps[b:]
        terms = concept_aware_loss_terms(eps_concept, eps_target, eps_superclass, noise_s, eps_teacher,
                                         alpha=cfg.alpha, beta=cfg.beta, kd=cfg.kd)
        terms["t"] = t.float().mean()
        return terms

    def dynamic_mask(self, stage: Stage, total_steps: int, steps_per_epoch: int) -> DynamicMask:
        cfg = self.config
        masked = {n: p for n, p in stage.delta.params.items() if cfg.mask_bias or not n.endswith(".bias")}
        return DynamicMask(masked, keep_fraction=cfg.keep_fraction, update_freq=cfg.update_freq, r_m=cfg.r_m,
                           total_steps=total_steps, accumulate=cfg.accumulate, ranking=cfg.ranking,
                           tau_per=cfg.tau_per, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs,
                           update_window=cfg.update_window,
                           zero_dropped_optimizer_state=cfg.zero_dropped_optimizer_state)

    def __call__(self, stage: Stage) -> Iterator[EpochResult]:
        cfg = self.config
        data = self.data[stage.concept.name].to(self.unet.device, self.unet.dtype)
        anchors = superclass_prompts(stage.concept)
        paired_superclass = {p: anchors[i % len(anchors)] for i, p in reversed(list(enumerate(stage.concept.prompts)))}
        for p in data.concept.prompts:           # images whose prompt is not one of the concept's own
            paired_superclass.setdefault(p, anchors[0])
        steps_per_epoch = cfg.steps_per_epoch(len(data.concept))
        total_steps = cfg.epochs * steps_per_epoch
        mask = self.dynamic_mask(stage, total_steps, steps_per_epoch)
        optimizer = stage.optimizer
        lr_schedule = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps)
                       if cfg.lr_schedule == "one_cycle" else None)
        generator = torch.Generator().manual_seed(cfg.seed + stage.index)
        bar = tqdm(total=total_steps, desc=f"SM {stage.index}:{stage.concept.name}", disable=not self.progress)
        step = 0
        for epoch in range(cfg.epochs):
            concept_order = torch.randperm(len(data.concept), generator=generator)
            superclass_order = torch.randperm(len(data.superclass), generator=generator)
            rows = []
            for start in range(0, len(concept_order), cfg.batch_size):
                step += 1
                idx = concept_order[start:start + cfg.batch_size]
                sidx = superclass_order[torch.arange(start, start + len(idx)) % len(superclass_order)]
                row: dict = {"step": step}
                if step <= cfg.warmup_steps:
                    terms = self.warmup_loss(data, idx, generator)
                    terms["loss"].backward()
                    mask.accumulate()
                    optimizer.zero_grad(set_to_none=True)
                    row["phase"] = "warmup"
                    if step == cfg.warmup_steps:
                        mask.initialise()
                else:
                    terms = self.concept_aware_loss(stage, data, idx, sidx, paired_superclass, generator)
                    terms["loss"].backward()
                    mask.accumulate()
                    mask.mask_gradients()
                    row["lr"] = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if lr_schedule is not None:
                        lr_schedule.step()
                    row["phase"] = "unlearn"
                    if mask.update_due(step):
                        row.update(mask.update(step, optimizer))
                row.update({k: float(v.detach()) for k, v in terms.items()})
                if mask.initialised:
                    row["active"] = mask.active_count()
                rows.append(row)
                bar.update(1)
            yield EpochResult(float(np.mean([r["unlearn"] for r in rows])), rows)
        bar.close()


# --- the eraser -----------------------------------------------------------------------------------------------------
def _check_data(data, concepts: list[Concept], unet) -> dict[str, ConceptTrainingData]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise TypeError(f"data must map concept names to ConceptTrainingData, got {type(data).__name__}")
    for name, item in data.items():
        if not isinstance(item, ConceptTrainingData):
            raise TypeError(f"data[{name!r}] must be ConceptTrainingData, got {type(item).__name__}")
        for part in (item.concept, item.superclass):
            if part.mean.shape[1] != unet.config.in_channels:
                raise ValueError(f"data[{name!r}] latents have {part.mean.shape[1]} channels, the UNet takes "
                                 f"{unet.config.in_channels}")
    return {c.name: data[c.name] for c in concepts if c.name in data}


def prepare(world, concepts, config: SculptingConfig = SculptingConfig(),
            image_cache_dir: str | Path | None = None) -> dict:
    """``{"data": …}`` for :func:`fit`: every concept's training latents (:func:`training_data`)."""
    return {"data": training_data(world, concepts, config, image_cache_dir)}


def fit(world, concepts: Sequence[Concept], config: SculptingConfig = SculptingConfig(), *, progress: bool = False,
        data: Mapping[str, ConceptTrainingData] | None = None,
        image_cache_dir: str | Path | None = None) -> Erasure:
    """Forget ``concepts`` in order; one Edit per stage and the per-step log. The world's model is left unchanged.

    ``edits[i]`` is the change made while forgetting ``concepts[i]``; ``Edit.total(edits[:i+1])`` is the model after
    stage ``i``. ``data`` reuses training latents (:func:`prepare`); missing concepts get theirs generated by the
    world's model before any training (through ``image_cache_dir``). Inputs are validated before any compute.
    """
    if not isinstance(config, SculptingConfig):
        raise TypeError(f"config must be a SculptingConfig, got {type(config).__name__}")
    concepts = validate_concepts(concepts)
    unet = world.pipe.unet
    data = _check_data(data, concepts, unet)
    for concept in concepts:
        n_images = len(data[concept.name].concept) if concept.name in data else config.images_per_class
        if config.warmup_steps >= config.total_steps(n_images):
            raise ValueError(f"warmup_steps={config.warmup_steps} leaves no optimisation step for concept "
                             f"{concept.name!r}: a stage has {config.total_steps(n_images)} steps "
                             f"({config.epochs} epochs × ⌈{n_images} images / batch {config.batch_size}⌉)")
    missing = [c for c in concepts if c.name not in data]
    if missing:
        data.update(training_data(world, missing, config, image_cache_dir))
    names = list(select_parameters(unet, config.scope))
    trainer = SculptingStage(world, config, data, progress)
    edits, log = run_sequential(unet, concepts, names, trainer,
                                make_optimizer=lambda params: torch.optim.Adam(params, lr=config.lr),
                                checkpoint=config.checkpoint, edit_prefix="sm",
                                metadata={"method": "sculpting_memory", "config": config.as_dict()})
    return Erasure(edits, log)


METHODS = (
    Method("sculpting", "Sculpting Memory",
           "Sculpting Memory: dynamic gradient mask + concept-aware loss, concepts in sequence (SM Eq. 1-12)",
           SculptingConfig, frozenset({ONE, SEQUENTIAL}), fit, prepare=prepare),
)
