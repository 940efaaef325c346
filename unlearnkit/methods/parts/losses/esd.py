"""ESD objective — Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023), §4.

The edited model's conditional prediction is trained towards the frozen model's *negatively guided* prediction
(ESD Eq. 3–5: P_θ(x) ∝ P_θ*(x) / P_θ*(c|x)^η, whose score gives the target)

    ε_θ(x_t, c, t)  ←  ε_θ*(x_t, t) − η [ε_θ*(x_t, c, t) − ε_θ*(x_t, t)]

    L_ESD = ‖ε_θ(x_t, c, t) − sg[ε*(x_t, ∅) − η(ε*(x_t, c) − ε*(x_t, ∅))]‖²

The target is ANT's erase target (:func:`unlearnkit.methods.parts.losses.trajectory.erase_target`); ESD applies it at every
timestep, ANT only below t′.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearnkit.methods.parts.losses.trajectory import erase_target

__all__ = ["esd_loss"]


def esd_loss(eps_cond: torch.Tensor, frozen_cond: torch.Tensor, frozen_uncond: torch.Tensor,
             eta: float) -> torch.Tensor:
    """Mean-squared ESD loss ``‖ε_θ(x_t, c) − sg[ε*(∅) − η(ε*(c) − ε*(∅))]‖²`` (ESD §4, Eq. 5 as a regression).

    Args:
        eps_cond: ``[B, C, h, w]`` prediction of the model being edited at ``(x_t, t, c)`` (with gradient).
        frozen_cond, frozen_uncond: ``ε*(x_t, t, c)`` and ``ε*(x_t, t)`` of the frozen model (no gradient).
        eta: negative-guidance strength η (ESD default 1).
    """
    if eps_cond.shape != frozen_cond.shape or frozen_cond.shape != frozen_uncond.shape:
        raise ValueError(f"shape mismatch: eps_cond {tuple(eps_cond.shape)}, frozen_cond {tuple(frozen_cond.shape)}, "
                         f"frozen_uncond {tuple(frozen_uncond.shape)}")
    target = erase_target(frozen_cond.detach(), frozen_uncond.detach(), eta)
    return F.mse_loss(eps_cond, target)
