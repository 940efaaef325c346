"""Concept-aware loss, Sculpting Memory Eq. (8)–(12), as pure tensor functions.

    L_total = L_unlearn + α·L_align + β·L_reg                                          (Eq. 12)

* ``L_unlearn = ‖ε_θ(x_t, c) − sg[ε_θ(x_t, c_s)]‖²`` on forget-set latents ``x_t`` (Eq. 8). The paper's Eq. (8)
  shows no stop-gradient; the release detaches the **superclass branch** ``ε(x_t, c_s)``, evaluated by the
  **current** model under ``no_grad`` (a moving target), and so do we: the concept prediction is pulled to the
  superclass prediction, never the other way round. Which model produces the target is the caller's choice
  (``target_model="current"|"frozen"`` in :class:`~unlearnkit.methods.sculpting.SculptingConfig`); here it is
  simply a tensor that is detached.
* ``L_align = ‖ε_θ(x^s_t, c_s) − ε‖²`` on superclass latents ``x^s_t`` with their noise ``ε`` (Eq. 9).
* ``L_reg = ‖ε_θ(x^s_t, c_s) − sg[ε_teacher(x^s_t, c_s)]‖²`` (Eq. 10–11), the teacher being the checkpoint after
  the previous concept (frozen, no gradient — detached here as well).

``kd=False`` reproduces the release, which computes the KD term and then overwrites it: β has no effect and no
teacher prediction is needed. Every ``‖·‖²`` is a mean squared error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["denoising_loss", "unlearn_loss", "align_loss", "regularisation_loss", "concept_aware_loss_terms"]


def denoising_loss(eps_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Plain diffusion loss ``‖ε − ε_θ(x_t, p)‖²``, Eq. (6) — used during the mask warm-up."""
    return F.mse_loss(eps_pred, noise)


def unlearn_loss(eps_concept: torch.Tensor, eps_superclass_target: torch.Tensor) -> torch.Tensor:
    """Eq. (8): ``‖ε_θ(x_t, c) − sg[ε(x_t, c_s)]‖²``; the superclass prediction is the (detached) target."""
    return F.mse_loss(eps_concept, eps_superclass_target.detach())


def align_loss(eps_superclass: torch.Tensor, noise_superclass: torch.Tensor) -> torch.Tensor:
    """Eq. (9): ``‖ε − ε_θ(x^s_t, c_s)‖²`` on superclass data."""
    return F.mse_loss(eps_superclass, noise_superclass)


def regularisation_loss(eps_superclass: torch.Tensor, eps_teacher: torch.Tensor) -> torch.Tensor:
    """Eq. (11): ``‖ε_teacher(x^s_t, c_s) − ε_θ(x^s_t, c_s)‖²``; the teacher side is detached (Eq. 10, no grad)."""
    return F.mse_loss(eps_superclass, eps_teacher.detach())


def concept_aware_loss_terms(eps_concept: torch.Tensor, eps_superclass_target: torch.Tensor,
                             eps_superclass: torch.Tensor, noise_superclass: torch.Tensor,
                             eps_teacher: torch.Tensor | None = None, alpha: float = 0.25, beta: float = 0.25,
                             kd: bool = True) -> dict[str, torch.Tensor]:
    """Eq. (12), ``L = L_unlearn + α·L_align + β·L_reg``, with every term for logging.

    Args:
        eps_concept: ``ε_θ(x_t, c)`` ``[B, C, h, w]`` (with gradient).
        eps_superclass_target: ``ε(x_t, c_s)`` at the *same* ``x_t`` (detached here).
        eps_superclass: ``ε_θ(x^s_t, c_s)`` on superclass latents (with gradient).
        noise_superclass: the ``ε`` that produced ``x^s_t``.
        eps_teacher: ``ε_teacher(x^s_t, c_s)`` (detached here); required when ``kd`` is True.
        kd: False drops ``L_reg`` from the total (the release; β then has no effect). ``reg`` is still reported
            when a teacher prediction is given, NaN otherwise.
    Returns:
        ``{"loss", "unlearn", "align", "reg"}`` scalars; only ``loss`` carries the gradient that is used.
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha!r}, beta={beta!r}")
    if kd and eps_teacher is None:
        raise ValueError("kd=True needs the teacher prediction eps_teacher (Eq. 10)")
    unlearn = unlearn_loss(eps_concept, eps_superclass_target)
    align = align_loss(eps_superclass, noise_superclass)
    loss = unlearn + alpha * align
    if eps_teacher is not None:
        reg = regularisation_loss(eps_superclass, eps_teacher)
        if kd:
            loss = loss + beta * reg
    else:
        reg = torch.full((), float("nan"), device=loss.device)
    return {"loss": loss, "unlearn": unlearn, "align": align, "reg": reg}
