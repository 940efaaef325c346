"""Straightforward reference implementations of ESD-x/ESD-u, ANT and AC, for the erasure-step benchmark.

Each ``naive_*_fit`` optimises **the same objective with the same random draws** as the library's ``fit``
(``unlearnkit.methods.esd.fit``, ``ant.fit``, ``ablating.fit``), but the way the papers' released scripts do it:

* the frozen model is a second full UNet, ``copy.deepcopy(unet)``, kept for the whole run (the library switches
  its ``TrainableDelta`` off instead and keeps only the original values of the trained entries);
* every noise prediction is its own UNet call: ``ε(x, c)`` and ``ε(x, ∅)`` separately, and for ANT each of the two
  trajectory points separately (the library batches cond + uncond, and both points, into one call per model);
* the DDIM sampling that produces ``x_t`` (ESD, ANT) also makes separate conditional / unconditional calls.

Because the generator is consumed in the library's order, step ``k`` of a naive run sees the same prompt, seed,
timesteps and noise as step ``k`` of the library run; the first step's loss must agree (the benchmark asserts it),
later steps agree up to float rounding carried through the optimiser. Like the library, each function leaves the
world's UNet as it found it and returns ``(Edit, log)`` — the learned ``Δθ`` of the trained parameters, as the
library does, so both hold the same output at the end — with one ``{"loss": …}`` row per step.

Used by ``benchmarks/erasure_steps.py``; not part of the library.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from unlearnkit.core.edits import Edit
from unlearnkit.methods.parts.losses.ablation import anchor_mapping_loss
from unlearnkit.methods.parts.losses.esd import esd_loss
from unlearnkit.methods.parts.losses.trajectory import draw_stage_steps, trajectory_loss_terms
from unlearnkit.methods.ablating import anchor_prompts_of, concept_prompt_for
from unlearnkit.methods.parts.training_data import noised, random_batch
from unlearnkit.core.params import select_parameters
from unlearnkit.sampling import SamplerSettings, ddim_scheduler_for, initial_noise, latent_shape

__all__ = ["naive_esd_fit", "naive_ant_fit", "naive_ac_fit", "sample_separately"]


def edit_from(params: dict, frozen: torch.nn.Module, name: str) -> Edit:
    """``Δθ = θ − θ₀`` of the trained parameters, read against the frozen copy (what the run hands back)."""
    originals = dict(frozen.named_parameters())
    with torch.no_grad():
        return Edit({n: (p.detach() - originals[n]).cpu() for n, p in params.items()}, name=name)


@contextmanager
def second_unet_training(unet: torch.nn.Module, names: list[str]):
    """Yield ``(frozen, params)``: a full ``deepcopy`` of ``unet`` (requires_grad off) and the trainable
    parameters of ``unet``; afterwards copy the original values back from the frozen copy."""
    frozen = copy.deepcopy(unet)
    frozen.requires_grad_(False)
    requires_grad = {n: p.requires_grad for n, p in unet.named_parameters()}
    all_params = dict(unet.named_parameters())
    params = {n: all_params[n] for n in names}
    unet.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    try:
        yield frozen, params
    finally:
        originals = dict(frozen.named_parameters())
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(originals[n])
        for n, p in unet.named_parameters():
            p.requires_grad_(requires_grad[n])
            p.grad = None
        del frozen


def _eps(unet, x, t, emb):
    """One UNet call, one condition: ``ε(x, t, emb)`` (``emb`` ``[1|B, L, d]``)."""
    if emb.shape[0] == 1 and x.shape[0] > 1:
        emb = emb.expand(x.shape[0], -1, -1)
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return unet(x, t, encoder_hidden_states=emb).sample


@torch.no_grad()
def sample_separately(unet, pipe, prompts, seeds, settings: SamplerSettings, embeddings, snapshot_steps):
    """DDIM from each seed's noise up to the lowest requested paper step, CFG with **two** UNet calls per step
    (conditional, then unconditional). Returns ``{paper_step: (x_t, t_train)}`` like ``sample_latents``."""
    n_steps = settings.num_inference_steps
    scheduler = ddim_scheduler_for(pipe, n_steps)
    device, dtype = unet.device, unet.dtype
    cond = embeddings(list(prompts)).to(device, dtype)
    uncond = embeddings([""]).to(device, dtype)
    x = initial_noise(seeds, latent_shape(pipe), device, dtype) * scheduler.init_noise_sigma
    wanted, snaps = set(int(s) for s in snapshot_steps), {}
    last_needed = min(wanted)
    for i, t in enumerate(scheduler.timesteps):
        paper_step = n_steps - i
        if paper_step in wanted:
            snaps[paper_step] = (x.clone(), int(t))
        if paper_step <= last_needed:
            break
        eps_cond = _eps(unet, x, t, cond)
        eps_uncond = _eps(unet, x, t, uncond)
        eps = eps_uncond + settings.guidance_scale * (eps_cond - eps_uncond)
        x = scheduler.step(eps, t, x, eta=settings.eta).prev_sample
    return snaps


def naive_esd_fit(world, concept, config, prompts=None, progress: bool = False):
    """ESD (``esd.fit``'s objective and draws): x_t from partial sampling with the trained model, then the frozen
    copy's ``ε*(x_t, c)`` and ``ε*(x_t, ∅)`` in two calls, the trained ``ε_θ(x_t, c)``, ``esd_loss``, Adam."""
    prompts = list(prompts if prompts is not None else concept.prompts)
    unet = world.pipe.unet
    names = list(select_parameters(unet, config.scope))
    uncond = world.embeddings([""]).to(unet.device, unet.dtype)
    sampler = SamplerSettings(config.num_inference_steps, config.start_guidance)
    generator = torch.Generator().manual_seed(config.seed)
    b = config.batch_size
    log = []
    with second_unet_training(unet, names) as (frozen, params):
        opt = torch.optim.Adam(list(params.values()), lr=config.lr)
        for _ in range(config.iterations):
            prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
            step = int(torch.randint(1, config.num_inference_steps + 1, (1,), generator=generator))
            seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
            batch_prompts = [prompt] * b
            snaps = sample_separately(unet, world.pipe, batch_prompts, [seed + i for i in range(b)], sampler,
                                      world.embeddings, (step,))
            x_t, t = snaps[step]
            cond = world.embeddings(batch_prompts).to(unet.device, unet.dtype)
            with torch.no_grad():
                frozen_cond = _eps(frozen, x_t, t, cond)
                frozen_uncond = _eps(frozen, x_t, t, uncond)
            eps_cond = _eps(unet, x_t, t, cond)
            loss = esd_loss(eps_cond, frozen_cond, frozen_uncond, config.negative_guidance)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append({"loss": float(loss.detach()), "paper_step": step, "t": t})
        edit = edit_from(params, frozen, f"naive-esd:{concept.name}")
    return edit, log


def naive_ant_fit(world, concept, config, mask=None, prompts=None, progress: bool = False):
    """ANT (``ant.fit``'s Eq. (3) and draws): one frozen-copy trajectory (two calls per DDIM step), then at each of
    the two points separate frozen ``ε*(z, c)``, ``ε*(z, ∅)`` calls and separate trained ``ε_θ(z, c)``,
    ``ε_θ(z, ∅)`` calls; ``trajectory_loss_terms``; gradients masked with ``mask``; Adam."""
    prompts = list(prompts if prompts is not None else concept.prompts)
    unet = world.pipe.unet
    scoped = select_parameters(unet, config.scope)
    names = list(mask) if mask is not None else list(scoped)
    w = config.weights
    sampler = SamplerSettings(config.num_inference_steps, config.trajectory_guidance)
    uncond = world.embeddings([""])
    generator = torch.Generator().manual_seed(config.seed)
    b = config.batch_size
    log = []
    with second_unet_training(unet, names) as (frozen, params):
        masks = {n: mask[n].to(p.device, torch.bool) for n, p in params.items()} if mask is not None else None
        opt = torch.optim.Adam(list(params.values()), lr=config.lr)
        for _ in range(config.iterations):
            prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
            seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
            s_early, s_late = draw_stage_steps(config.t_prime, config.num_inference_steps, generator, w.erase_span,
                                               config.stage_split)
            steps = (s_early, s_late) if w.needs_early else (s_late,)
            batch_prompts, seeds = [prompt] * b, [seed + i for i in range(b)]
            cond = world.embeddings(batch_prompts)
            snaps = sample_separately(frozen, world.pipe, batch_prompts, seeds, sampler, world.embeddings, steps)
            out = {}
            for s in steps:
                x, t = snaps[s]
                with torch.no_grad():
                    fc, fu = _eps(frozen, x, t, cond), _eps(frozen, x, t, uncond)
                ec = _eps(unet, x, t, cond)
                eu = _eps(unet, x, t, uncond) if w.needs_uncond else None
                out[s] = (fc, fu, ec, eu)
            late = out[s_late]
            early = out[s_early] if w.needs_early else (None, None, None, None)
            terms = trajectory_loss_terms(
                w, eps_cond_late=late[2], frozen_cond_late=late[0], frozen_uncond_late=late[1],
                eps_uncond_late=late[3], eps_cond_early=early[2], frozen_cond_early=early[0],
                frozen_uncond_early=early[1], eps_uncond_early=early[3])
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if masks is not None:
                for n, p in params.items():
                    if p.grad is not None:
                        p.grad.mul_(masks[n])
            opt.step()
            log.append({k: float(v.detach()) for k, v in terms.items()})
        edit = edit_from(params, frozen, f"naive-ant:{concept.name}")
    return edit, log


def naive_ac_fit(world, concept, config, anchor_data, progress: bool = False):
    """AC model-based (``ablating.fit``'s objective and draws): the frozen copy's ``ε*(x_t, c*)`` and the trained
    ``ε_θ(x_t, c)``, ``anchor_mapping_loss``, AdamW. (AC has no unconditional prediction, so here the only
    difference from the library is the second UNet.)"""
    anchor_prompts = anchor_prompts_of(concept)
    unet = world.pipe.unet
    names = list(select_parameters(unet, config.scope))
    generator = torch.Generator().manual_seed(config.seed)
    x0_all = anchor_data.latents.to(unet.device, unet.dtype)
    log = []
    with second_unet_training(unet, names) as (frozen, params):
        opt = torch.optim.AdamW(list(params.values()), lr=config.effective_lr, weight_decay=config.weight_decay)
        for _ in range(config.iterations):
            idx = random_batch(generator, len(anchor_data), config.batch_size)
            anchor_batch = [anchor_data.prompts[i] for i in idx.tolist()]
            concept_batch = [concept_prompt_for(concept, anchor_prompts, p, generator) for p in anchor_batch]
            x_t, t, _ = noised(world, x0_all[idx.to(x0_all.device)], generator)
            with torch.no_grad():
                eps_anchor = _eps(frozen, x_t, t, world.embeddings(anchor_batch).to(unet.device, unet.dtype))
            eps_concept = _eps(unet, x_t, t, world.embeddings(concept_batch).to(unet.device, unet.dtype))
            loss = anchor_mapping_loss(eps_concept, eps_anchor)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append({"loss": float(loss.detach()), "t_mean": float(t.float().mean())})
        edit = edit_from(params, frozen, f"naive-ac:{concept.name}")
    return edit, log
