"""Frozen DDIM trajectories, sampled once and read by every update (ANT Eq. 3 on a fixed set of runs).

ANT's loss reads the frozen model θ* at two points ``z₁`` (t > t′) and ``z₂`` (t ≤ t′) of one denoising trajectory
of θ*. A bank of ``J`` runs sampled once — every step's latent and θ*'s conditional and unconditional predictions
there — gives the same points and targets as fresh sampling, for one trainable UNet call per update; seeds come
from the ``J`` runs instead of a new seed per update.

Memory: ``3 · J · N`` latents on the CPU (SD v1.4, 64×64 latents, N = 50: about 10 MB per run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from unlearnkit.core.diffusion import predict_eps
from unlearnkit.sampling import ddim_scheduler_for, initial_noise, latent_shape

__all__ = ["TrajectoryBank", "sample_trajectory_bank"]


@dataclass
class TrajectoryBank:
    """Frozen DDIM runs: for run ``j`` and paper step ``s`` (``N`` … 1) the latent ``x[j, N−s]`` entering step
    ``s``, its train timestep ``t[N−s]``, the frozen ``eps_cond`` / ``eps_uncond`` there, and the run's final
    latent ``x0[j]`` (the frozen model's image of the prompt)."""

    concept: str
    prompts: list[str]
    x: torch.Tensor            # [J, N, C, h, w]
    t: torch.Tensor            # [N] train timesteps, index N − s
    eps_cond: torch.Tensor     # [J, N, C, h, w]
    eps_uncond: torch.Tensor   # [J, N, C, h, w]
    x0: torch.Tensor           # [J, C, h, w]
    num_inference_steps: int

    def __len__(self) -> int:
        return len(self.prompts)

    def points(self, runs: Sequence[int], paper_steps: Sequence[int], device=None):
        """:meth:`gather` at each of ``paper_steps``, concatenated step after step (batch ``len(steps)·len(runs)``)
        and moved to ``device`` — the frozen points and targets of one ANT update (Eq. 3: ``z₁`` then ``z₂``)."""
        gathered = [self.gather(runs, s) for s in paper_steps]
        return tuple(torch.cat([g[k] for g in gathered]).to(device) for k in range(4))

    def gather(self, runs: Sequence[int], paper_step: int):
        """``(x_t, t, eps_cond*, eps_uncond*)`` entering ``paper_step`` of each run in ``runs`` (batch ``len(runs)``)."""
        if not 1 <= paper_step <= self.num_inference_steps:
            raise ValueError(f"paper_step must be in 1..{self.num_inference_steps}, got {paper_step!r}")
        i = self.num_inference_steps - paper_step
        idx = torch.as_tensor(list(runs), dtype=torch.long)
        return (self.x[idx, i], self.t[i].expand(len(idx)), self.eps_cond[idx, i], self.eps_uncond[idx, i])


@torch.no_grad()
def sample_trajectory_bank(world, runs: dict[str, Sequence[tuple[str, int]]], num_inference_steps: int,
                           guidance_scale: float, batch_size: int = 64) -> dict[str, TrajectoryBank]:
    """One batched frozen DDIM pass over every ``(prompt, seed)`` of every concept in ``runs``, keeping every step.

    Call it on the original model (no edit, no adapter): the bank *is* θ*'s trajectory field that Eq. (3) reads.
    Guidance is plain CFG with ``guidance_scale``; DDIM with η = 0.
    """
    if not runs or any(not items for items in runs.values()):
        raise ValueError(f"runs must map each concept to a non-empty list of (prompt, seed), got {runs!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    unet = world.pipe.unet
    device, dtype = unet.device, unet.dtype
    uncond = world.embeddings([""]).to(device, dtype)
    items = [(name, prompt, int(seed)) for name, pairs in runs.items() for prompt, seed in pairs]
    xs, eps_c, eps_u, finals, ts = [], [], [], [], None
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        scheduler = ddim_scheduler_for(world.pipe, num_inference_steps)
        cond = world.embeddings([p for _, p, _ in chunk]).to(device, dtype)
        x = initial_noise([s for _, _, s in chunk], latent_shape(world.pipe), device, dtype)
        x = x * scheduler.init_noise_sigma
        run_x, run_c, run_u = [], [], []
        for t in scheduler.timesteps:
            ec, eu = predict_eps(unet, x, t, cond, uncond)
            run_x.append(x.cpu()), run_c.append(ec.cpu()), run_u.append(eu.cpu())
            x = scheduler.step(eu + guidance_scale * (ec - eu), t, x, eta=0.0).prev_sample
        xs.append(torch.stack(run_x, 1)), eps_c.append(torch.stack(run_c, 1)), eps_u.append(torch.stack(run_u, 1))
        finals.append(x.cpu())
        ts = torch.as_tensor(scheduler.timesteps).long().cpu()
    xs, eps_c, eps_u, finals = torch.cat(xs), torch.cat(eps_c), torch.cat(eps_u), torch.cat(finals)
    banks, start = {}, 0
    for name, pairs in runs.items():
        sl = slice(start, start + len(pairs))
        banks[name] = TrajectoryBank(name, [p for p, _ in pairs], xs[sl], ts, eps_c[sl], eps_u[sl], finals[sl],
                                     num_inference_steps)
        start += len(pairs)
    return banks
