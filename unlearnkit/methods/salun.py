"""SalUn (Fan et al., ICLR 2024): random-label forgetting inside a weight-saliency mask, SalUn Eq. (3)–(4).

``m_S = 1(|∇θ ℓ_f| ≥ γ)`` over D_f at the pretrained weights (one γ for the whole scope, keeping ``keep_fraction``),
then masked fine-tuning: the concept's prediction is pulled to a different concept's (``pseudo_prompts``, default the
anchor prompts) at the same ``x_t``, plus ``alpha`` times the denoising loss on D_r. ``mask_select="salun_released"``
keeps the smallest ``keep_fraction`` of ``|g|`` instead, as the release does (a compatibility mode).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unlearnkit.core.diffusion import guided_eps, predict_eps
from unlearnkit.core.edits import training_in_place
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.core.validation import check_choice, check_integer, check_number, check_seed
from unlearnkit.methods.ablating import anchor_prompts_of
from unlearnkit.methods.contract import ONE, SEVERAL_JOINT, Erasure, Method, joint_concept
from unlearnkit.methods.parts.losses.ablation import salun_loss_terms
from unlearnkit.methods.parts.saliency import (Mask, SaliencyThreshold, check_mask_in_scope, count_active, nonempty,
                                               saliency_map)
from unlearnkit.methods.parts.training_data import GeneratedLatents, generate_latents, noised, random_batch
from unlearnkit.sampling import SamplerSettings, check_sampler

__all__ = ["SalUnConfig", "global_saliency_mask", "saliency_mask", "prepare", "fit", "METHODS"]

THRESHOLD_SCOPES = ("global", "per_tensor")
MASK_SELECTIONS = ("top", "salun_released")


@dataclass(frozen=True)
class SalUnConfig:
    """SalUn's released SD v1.4 settings: lr 1e-5, 5 epochs, batch 8, ``alpha`` 0.5 (retain-loss weight), mask
    ``keep_fraction`` 0.5, CFG 7.5 for the mask (``mask_guidance``), the whole UNet, Adam. D_f and D_r are
    ``forget_images`` / ``retain_images`` images drawn with ``sampler`` (200 each, ours); one epoch is
    ``⌈forget_images / batch_size⌉`` updates."""

    lr: float = 1e-5
    epochs: int = 5
    batch_size: int = 8
    alpha: float = 0.5
    keep_fraction: float = 0.5
    threshold_scope: str = "global"
    mask_select: str = "top"
    mask_guidance: float = 7.5
    scope: str = "unet"
    forget_images: int = 200
    retain_images: int = 200
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    seed: int = 0

    def __post_init__(self):
        check_number(self.lr, "lr", positive=True)
        for name in ("epochs", "batch_size", "forget_images", "retain_images"):
            check_integer(getattr(self, name), name, minimum=1)
        check_number(self.alpha, "alpha", minimum=0)
        check_number(self.keep_fraction, "keep_fraction", above=0, maximum=1)
        check_choice(self.threshold_scope, "threshold_scope", THRESHOLD_SCOPES)
        check_choice(self.mask_select, "mask_select", MASK_SELECTIONS)
        check_number(self.mask_guidance, "mask_guidance", minimum=0)
        check_choice(self.scope, "scope", scope_names())
        check_sampler(self.sampler)
        check_seed(self.seed)

    def as_dict(self) -> dict:
        return asdict(self)


def global_saliency_mask(grads: dict[str, torch.Tensor], keep_fraction: float, select: str = "top") -> Mask:
    """SalUn Eq. (3) with one γ for all tensors: keep the ``keep_fraction`` largest ``|g|`` over the whole scope
    (``select="salun_released"``: the smallest, as the release does). Ties at γ are kept."""
    if select not in MASK_SELECTIONS:
        raise ValueError(f"select must be one of {MASK_SELECTIONS}, got {select!r}")
    if keep_fraction >= 1:
        return {n: torch.ones_like(g, dtype=torch.bool) for n, g in grads.items()}
    magnitudes = torch.cat([g.detach().abs().flatten().float().cpu() for g in grads.values()])
    k = max(1, int(keep_fraction * magnitudes.numel()))
    if select == "salun_released":
        gamma = float(torch.kthvalue(magnitudes, k).values)
        return {n: g.detach().abs() <= gamma for n, g in grads.items()}
    gamma = float(torch.kthvalue(magnitudes, magnitudes.numel() - k + 1).values)
    if gamma <= 0:  # more than (1 − keep_fraction) of the gradient is exactly zero: keep every non-zero entry
        return {n: g.detach() != 0 for n, g in grads.items()}
    return saliency_map(grads, SaliencyThreshold(gamma=gamma))


def saliency_mask(world, forget_data: GeneratedLatents, config: SalUnConfig = SalUnConfig()) -> Mask:
    """The static saliency mask ``m_S`` of SalUn Eq. (3) over ``config.scope``, from one pass over D_f at the
    world's current (pretrained) weights."""
    unet = world.pipe.unet
    forget_data.check_fits(unet, "forget latents")
    params = select_parameters(unet, config.scope)
    requires_grad = {n: p.requires_grad for n, p in unet.named_parameters()}
    generator = torch.Generator().manual_seed(config.seed)
    uncond = world.embeddings([""]).to(unet.device, unet.dtype)
    x0_all = forget_data.latents.to(unet.device, unet.dtype)
    try:
        unet.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        for start in range(0, len(forget_data), config.batch_size):
            x_t, t, noise = noised(world, x0_all[start:start + config.batch_size], generator)
            cond = world.embeddings(forget_data.prompts[start:start + config.batch_size]).to(unet.device, unet.dtype)
            eps_cond, eps_uncond = predict_eps(unet, x_t, t, cond, uncond)
            guided = guided_eps(eps_cond, eps_uncond, 1.0 + config.mask_guidance)
            (-F.mse_loss(guided, noise)).backward()  # gradients add up over the forget set
        grads = {n: p.grad for n, p in params.items() if p.grad is not None}
        if config.threshold_scope == "global" or config.keep_fraction >= 1:
            return global_saliency_mask(grads, config.keep_fraction, config.mask_select)
        select = "ant_released" if config.mask_select == "salun_released" else "top"
        return saliency_map(grads, SaliencyThreshold(keep_fraction=config.keep_fraction, select=select))
    finally:
        for n, p in unet.named_parameters():
            p.requires_grad_(requires_grad[n])
            p.grad = None


def _prompts(concept, pseudo_prompts, retain_prompts) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pseudo_prompts = tuple(pseudo_prompts) if pseudo_prompts is not None else anchor_prompts_of(concept)
    retain_prompts = tuple(retain_prompts) if retain_prompts is not None else pseudo_prompts
    return pseudo_prompts, retain_prompts


def _forget_data(world, concept, config: SalUnConfig) -> GeneratedLatents:
    return generate_latents(world, concept.prompts, config.forget_images, config.sampler, config.seed)


def _retain_data(world, retain_prompts, config: SalUnConfig) -> GeneratedLatents:
    return generate_latents(world, retain_prompts, config.retain_images, config.sampler,
                            config.seed + config.forget_images)


def prepare(world, concepts, config: SalUnConfig = SalUnConfig()) -> dict:
    """``forget_data``, ``retain_data`` and ``mask`` for :func:`fit`, from the world's current (pretrained) model."""
    concept = joint_concept(concepts, "SalUn")
    forget = _forget_data(world, concept, config)
    retain = _retain_data(world, _prompts(concept, None, None)[1], config)
    return {"forget_data": forget, "retain_data": retain, "mask": saliency_mask(world, forget, config)}


def fit(world, concepts, config: SalUnConfig = SalUnConfig(), *, progress: bool = False, mask: Mask | None = None,
        pseudo_prompts=None, retain_prompts=None, forget_data: GeneratedLatents | None = None,
        retain_data: GeneratedLatents | None = None) -> Erasure:
    """Erase the concept with SalUn (several: once on their joint concept); the Edit's metadata holds the mask size.
    The world's UNet is left unchanged.

    ``mask``: m_S (:func:`saliency_mask` when omitted); ``pseudo_prompts``: the different concept's prompts c′
    (default the anchor prompts); ``retain_prompts``: D_r's prompts (default the pseudo prompts);
    ``forget_data`` / ``retain_data``: images generated earlier (:func:`prepare`).
    """
    concept = joint_concept(concepts, "SalUn")
    pseudo_prompts, retain_prompts = _prompts(concept, pseudo_prompts, retain_prompts)
    for name, prompts in (("pseudo_prompts", pseudo_prompts), ("retain_prompts", retain_prompts)):
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{name} must be a non-empty list of strings, got {prompts!r}")
    if set(pseudo_prompts) & set(concept.prompts):
        raise ValueError("pseudo_prompts overlap the concept's prompts: SalUn maps the concept to a *different* one")
    unet = world.pipe.unet
    scoped = select_parameters(unet, config.scope)
    if mask is not None:
        check_mask_in_scope(mask, scoped, config.scope)
    for name, data in (("forget", forget_data), ("retain", retain_data)):
        if data is not None:
            if not isinstance(data, GeneratedLatents):
                raise TypeError(f"{name}_data must be GeneratedLatents, got {type(data).__name__}")
            data.check_fits(unet, f"{name} latents")
    if forget_data is None:
        forget_data = _forget_data(world, concept, config)
    if retain_data is None:
        retain_data = _retain_data(world, retain_prompts, config)
    if mask is None:
        mask = saliency_mask(world, forget_data, config)
    mask = nonempty(mask)
    if not mask:
        raise ValueError("the saliency mask selects no parameter: raise keep_fraction")
    generator = torch.Generator().manual_seed(config.seed + 1)
    forget_x0 = forget_data.latents.to(unet.device, unet.dtype)
    retain_x0 = retain_data.latents.to(unet.device, unet.dtype)
    b = config.batch_size
    steps_per_epoch = math.ceil(len(forget_data) / b)
    log = []
    with training_in_place(unet, list(mask), mask) as delta:
        opt = torch.optim.Adam(list(delta.params.values()), lr=config.lr)
        bar = tqdm(total=config.epochs * steps_per_epoch, desc=f"SalUn {concept.name}", disable=not progress)
        for epoch in range(config.epochs):
            order = torch.randperm(len(forget_data), generator=generator)
            for start in range(0, len(order), b):
                idx = order[start:start + b]
                ridx = random_batch(generator, len(retain_data), len(idx))
                x_t, t, _ = noised(world, forget_x0[idx.to(forget_x0.device)], generator)
                xr_t, tr, noise_r = noised(world, retain_x0[ridx.to(retain_x0.device)], generator)
                forget_cond = world.embeddings([forget_data.prompts[i] for i in idx.tolist()])
                retain_cond = world.embeddings([retain_data.prompts[i] for i in ridx.tolist()])
                pseudo = [pseudo_prompts[int(torch.randint(len(pseudo_prompts), (1,), generator=generator))]
                          for _ in range(len(idx))]
                with torch.no_grad():
                    eps_pseudo = predict_eps(unet, x_t, t, world.embeddings(pseudo).to(unet.device, unet.dtype))
                eps = predict_eps(unet, torch.cat([x_t, xr_t]), torch.cat([t, tr]),
                                  torch.cat([forget_cond, retain_cond]).to(unet.device, unet.dtype))
                eps_forget, eps_retain = eps[:len(idx)], eps[len(idx):]
                terms = salun_loss_terms(eps_forget, eps_pseudo, eps_retain, noise_r, config.alpha)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                delta.mask_gradients()
                opt.step()
                log.append({**{k: float(v.detach()) for k, v in terms.items()}, "epoch": epoch})
                bar.update(1)
        bar.close()
        edit = delta.to_edit(name=f"salun:{concept.name}",
                             metadata={"method": "salun", "concept": concept.name, "config": config.as_dict(),
                                       "pseudo_prompts": list(pseudo_prompts),
                                       "active_parameters": count_active(mask)})
    return Erasure([edit], log)


METHODS = (
    Method("salun", "SalUn", "SalUn: random-label forgetting inside a gradient saliency mask (SalUn)", SalUnConfig,
           frozenset({ONE, SEVERAL_JOINT}), fit, sampler_input=True, prepare=prepare),
)
