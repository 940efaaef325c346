"""G-CiRs objective — generation of concept-irrelevant representations, SepME §3.1, Eq. (2)–(4), Alg. 1–2.

A concept's *representation* is the noise difference it causes (§3.1)::

    Δ_ε(c_i, θ) = ε_θ(x_t, c_i, t) − ε_θ(x_t, c_∅, t)

and erasing ``c_i`` means making the edited model's representation uncorrelated with the original's (Eq. 2)::

    L_cor(c_i, Δθ) = Avg( Δ_ε(c_i, θ) ⊙ Δ_ε(c_i, θ + Δθ) )

a *signed* mean of the element-wise product (not its absolute value; the release computes the same signed inner
product). It is minimised (Eq. 3 / Eq. 11)::

    L_G-CiRs = Σ_i η_i L_cor(c_i, Δθ) + λ ‖Δθ‖_p,      η_i = ‖L_cor(c_1)‖₂ / ‖L_cor(c_i)‖₂

with the constraint ``L_cor = 0`` enforced by early stopping on the momentum statistic (Eq. 4)::

    L_mom^n = α L_mom^{n−1} + (1 − α) Σ_i η_i L_cor(c_i),     stop once L_mom^n ≤ τ   (α = 0.9, τ = 0)

``Δ_ε(c_i, θ)`` is a frozen-model quantity: callers compute it under ``torch.no_grad`` with the edit switched off.
``η_i`` are balancing weights and carry no gradient. ``‖Δθ‖_p`` is the paper's metric ``‖Δθ‖₁ / M`` (mean over the
``M`` modified tensors of their L1 norms; SepME §4.1), generalised to any ``p``; SepME regularises the combination
weights ``𝒲`` instead of ``Δθ`` (Eq. 11) — pass those tensors.
"""
from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["concept_representation", "correlation_loss", "balancing_weights", "balanced_correlation",
           "weight_penalty", "MomentumStop"]


def concept_representation(eps_concept: torch.Tensor, eps_empty: torch.Tensor) -> torch.Tensor:
    """``Δ_ε(c, θ) = ε_θ(x_t, c, t) − ε_θ(x_t, c_∅, t)`` (SepME §3.1)."""
    if eps_concept.shape != eps_empty.shape:
        raise ValueError(f"ε(c) has shape {tuple(eps_concept.shape)} but ε(∅) has {tuple(eps_empty.shape)}")
    return eps_concept - eps_empty


def correlation_loss(frozen_representation: torch.Tensor, edited_representation: torch.Tensor) -> torch.Tensor:
    """``L_cor = Avg(Δ_ε(c, θ) ⊙ Δ_ε(c, θ + Δθ))`` (SepME Eq. 2): a signed scalar.

    ``frozen_representation`` is detached (the frozen model is a constant target); the mean runs over every
    element of the batch given, i.e. over all samples of one concept.
    """
    if frozen_representation.shape != edited_representation.shape:
        raise ValueError(f"representations differ in shape: {tuple(frozen_representation.shape)} vs "
                         f"{tuple(edited_representation.shape)}")
    return (frozen_representation.detach() * edited_representation).mean()


def balancing_weights(correlations: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``η_i = ‖L_cor(c_1)‖₂ / ‖L_cor(c_i)‖₂`` (SepME Eq. 3) for the ``[N]`` scalar losses; no gradient.

    ``η_1 = 1``; a loss that is exactly zero gets the weight 1 (its term is zero whatever the weight).
    """
    magnitude = correlations.detach().abs()
    if magnitude.ndim != 1 or magnitude.numel() == 0:
        raise ValueError(f"expected a non-empty [N] tensor of per-concept losses, got shape {tuple(magnitude.shape)}")
    weights = magnitude[0] / magnitude.clamp_min(eps)
    return torch.where(magnitude > eps, weights, torch.ones_like(weights))


def balanced_correlation(correlations: torch.Tensor) -> torch.Tensor:
    """``Σ_i η_i L_cor(c_i)`` (the data term of Eq. 3, Eq. 11 and the summand of Eq. 4)."""
    return (balancing_weights(correlations) * correlations).sum()


def weight_penalty(tensors: Iterable[torch.Tensor], p: float = 1.0) -> torch.Tensor:
    """``‖Δθ‖_p = (1/M) Σ_m ‖Δθ_m‖_p`` over the ``M`` given tensors (SepME §4.1 metric; Eq. 3 / Eq. 11 penalty)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("weight_penalty needs at least one tensor")
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    return torch.stack([torch.linalg.vector_norm(t.flatten(), ord=p) for t in tensors]).mean()


class MomentumStop:
    """Early stopping on the momentum statistic ``L_mom^n = α L_mom^{n−1} + (1 − α) Σ η_i L_cor`` (SepME Eq. 4).

    The paper leaves ``L_mom^0`` open; like the release we start from the first observed value (``L_mom^1 =
    Σ η_i L_cor`` at the first step) rather than 0, so a single noisy draw cannot stop training at once.
    :meth:`update` returns True exactly when ``L_mom^n ≤ τ`` and ``n > min_steps``.
    """

    def __init__(self, alpha: float = 0.9, tau: float = 0.0, min_steps: int = 0):
        if not (0 <= alpha < 1):
            raise ValueError(f"momentum α must lie in [0, 1), got {alpha!r}")
        if not isinstance(min_steps, int) or min_steps < 0:
            raise ValueError(f"min_steps must be a non-negative integer, got {min_steps!r}")
        self.alpha, self.tau, self.min_steps = float(alpha), float(tau), min_steps
        self.value: float | None = None
        self.steps = 0

    def update(self, balanced_loss: float) -> bool:
        """Fold in this step's ``Σ η_i L_cor``; True when training must stop before the update."""
        balanced_loss = float(balanced_loss)
        self.value = balanced_loss if self.value is None else self.alpha * self.value + (1 - self.alpha) * balanced_loss
        self.steps += 1
        return self.steps > self.min_steps and self.value <= self.tau
