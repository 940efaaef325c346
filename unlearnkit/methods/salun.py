"""SalUn — Saliency Unlearning for text-to-image diffusion (Fan et al., ICLR 2024).

Algorithm (SalUn §4, the SD recipe of the release):
1. images of the concept (forget set D_f) and of retained content (D_r) are generated once with the pretrained
   model (:func:`unlearnkit.methods.ablating.generate_latents`);
2. **weight saliency** (SalUn Eq. 3): ``g = ∇θ ℓ_f(θ; D_f)`` at the pretrained weights, accumulated over D_f, with
   ``ℓ_f = −‖ε − ε̃_θ(x_t, c)‖²`` on the classifier-free-guided prediction
   ``ε̃ = ε_θ(x_t, ∅) + (1 + w)(ε_θ(x_t, c) − ε_θ(x_t, ∅))`` (``w`` = ``mask_guidance``, the release's
   ``--c_guidance``); ``m_S = 1(|g| ≥ γ)`` with γ chosen so that ``keep_fraction`` of all entries of the scope are
   kept (one threshold over the whole UNet);
3. **masked fine-tuning** (SalUn Eq. 4: ``θ_u = m_S ⊙ (Δθ + θ₀) + (1 − m_S) ⊙ θ₀``) with the random-label objective
   for diffusion: the concept's prediction is pulled to a *different* concept's prediction at the same ``x_t``,
   plus ``α`` times the ordinary denoising loss on D_r (:func:`unlearnkit.methods.parts.losses.ablation.salun_loss_terms`).

What the "different concept" is: ``pseudo_prompts`` — by default the Concept's anchor prompts (the release erases
"a photo of a nude person" towards "a photo of a person wearing clothes", and uses those clothed prompts and images
as D_r too). ``mask_select="salun_released"`` keeps the *smallest* ``keep_fraction`` of ``|g|`` instead, as the
released ``generate_mask.py`` does (it thresholds ascending ranks) — a compatibility mode only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import guided_eps, predict_eps
from unlearnkit.core.edits import Edit
from unlearnkit.methods.parts.losses.ablation import salun_loss_terms
from unlearnkit.methods.parts.saliency import Mask, SaliencyThreshold, check_mask_in_scope, count_active, nonempty, saliency_map
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.sampling import SamplerSettings
from unlearnkit.core.edits import training_in_place
from unlearnkit.methods.ablating import GeneratedLatents, anchor_prompts_of, generate_latents, noised, random_batch

__all__ = ["SalUnConfig", "global_saliency_mask", "saliency_mask", "fit"]

THRESHOLD_SCOPES = ("global", "per_tensor")
MASK_SELECTIONS = ("top", "salun_released")


@dataclass(frozen=True)
class SalUnConfig:
    """SalUn hyperparameters for SD v1.4, from the release's README and scripts: lr 1e-5, 5 epochs, batch 8,
    ``alpha`` 0.5 (retain-loss weight), mask threshold 0.5 (``with_0.5.pt``), ``c_guidance`` 7.5 for the mask,
    ``train_method full`` (the whole UNet), Adam.

    ``forget_images`` / ``retain_images``: sizes of D_f and D_r generated with ``sampler`` (the release reads image
    folders; 200 each is our choice, AC's anchor-set size). One epoch is ``⌈forget_images / batch_size⌉`` updates.
    """

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
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("epochs", "batch_size", "forget_images", "retain_images"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if not (0 < self.keep_fraction <= 1):
            raise ValueError(f"keep_fraction must lie in (0, 1], got {self.keep_fraction!r}")
        if self.threshold_scope not in THRESHOLD_SCOPES:
            raise ValueError(f"threshold_scope must be one of {THRESHOLD_SCOPES}, got {self.threshold_scope!r}")
        if self.mask_select not in MASK_SELECTIONS:
            raise ValueError(f"mask_select must be one of {MASK_SELECTIONS}, got {self.mask_select!r}")
        if self.scope not in scope_names():
            raise ValueError(f"unknown parameter scope {self.scope!r}; expected one of {scope_names()}")

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


def fit(world, concept: Concept, config: SalUnConfig = SalUnConfig(), mask: Mask | None = None,
        pseudo_prompts=None, retain_prompts=None, forget_data: GeneratedLatents | None = None,
        retain_data: GeneratedLatents | None = None, progress: bool = True) -> tuple[Edit, list[dict]]:
    """Erase ``concept`` with SalUn; return the Edit (its metadata holds the mask size) and a per-update log.

    ``mask`` is m_S (computed by :func:`saliency_mask` when omitted); ``pseudo_prompts`` the different concept's
    prompts c′ (default: the concept's anchor prompts); ``retain_prompts`` D_r's prompts (default: the pseudo
    prompts); ``forget_data`` / ``retain_data`` reuse images generated earlier. The world's UNet is left unchanged.
    """
    pseudo_prompts = tuple(pseudo_prompts) if pseudo_prompts is not None else anchor_prompts_of(concept)
    retain_prompts = tuple(retain_prompts) if retain_prompts is not None else pseudo_prompts
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
        forget_data = generate_latents(world, concept.prompts, config.forget_images, config.sampler, config.seed)
    if retain_data is None:
        retain_data = generate_latents(world, retain_prompts, config.retain_images, config.sampler,
                                       config.seed + config.forget_images)
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
    return edit, log
