"""ANT's trajectory-aware loss, ANT Eq. (3).

    L = w_p·L_preserve + λ₁·L_erase + λ₂·L_uncond-early + λ₃·L_uncond-late

with δ*(c) = ε*(z, c) − ε*(z, ∅) from the frozen original model θ* (stop-gradient):

* L_preserve      = ‖ε_θ(z₁, t₁, c) − sg[ε*(z₁, t₁) + η δ*(c)]‖²,  t₁ ~ U(t′, T)   (early: keep the field)
* L_erase         = ‖ε_θ(z₂, t₂, c) − sg[ε*(z₂, t₂) − η δ*(c)]‖²,  t₂ ~ U(0, t′)   (mid-to-late: steer away)
* L_uncond-early  = ‖ε_θ(z₁, t₁) − sg[ε*(z₁, t₁)]‖²
* L_uncond-late   = ‖ε_θ(z₂, t₂) − sg[ε*(z₂, t₂)]‖²

Every term can be switched off (its weight 0) and L_erase can span all timesteps, so the ablation configs A–E of
ANT Table 4 are parameter settings (:data:`ABLATION_CONFIGS`), not code paths.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearnkit.core.validation import check_choice, check_number

STAGE_SPLITS = ("paper", "ant_single_released")
ERASE_SPANS = ("late", "all")


@dataclass(frozen=True)
class TrajectoryLossWeights:
    """Weights of Eq. (3) in the paper's form. ANT Table 6: NSFW (1.0, 0.5, 0.5), celebrity/art (0.4, 0.5, 0.2)."""

    preserve: float = 1.0
    lambda1: float = 1.0      # L_erase
    lambda2: float = 0.5      # L_uncond-early
    lambda3: float = 0.5      # L_uncond-late
    eta: float = 1.0
    erase_span: str = "late"  # "all": L_erase at every timestep (ESD-like, configs A/B)

    def __post_init__(self):
        for name in ("preserve", "lambda1", "lambda2", "lambda3"):
            check_number(getattr(self, name), name, minimum=0)
        check_number(self.eta, "eta")
        check_choice(self.erase_span, "erase_span", ERASE_SPANS)

    @property
    def needs_early(self) -> bool:
        """Whether any term reads the early sample (z₁, t₁)."""
        return self.preserve > 0 or self.lambda2 > 0

    @property
    def needs_uncond(self) -> bool:
        return self.lambda2 > 0 or self.lambda3 > 0

    @classmethod
    def from_released_alphas(cls, alpha1: float, alpha2: float, code_base: str = "multiple", **kw):
        """Convert the released code's (α₁, α₂) to the paper's λ.

        ANT ``Multiple/``: total = L_erase + α₁L_uncond⁻ + α₂(L_preserve + α₁L_uncond⁺); dividing by α₂ gives
        λ₁ = 1/α₂, λ₂ = α₁, λ₃ = α₁/α₂. ANT ``Single/`` assigns α₁ to the preserve group instead:
        total = L₃ + α₂L₄ + α₁(L₁ + α₂L₂) ⇒ λ₁ = 1/α₁, λ₂ = α₂, λ₃ = α₂/α₁.
        """
        if alpha1 <= 0 or alpha2 <= 0:
            raise ValueError(f"alphas must be positive, got ({alpha1}, {alpha2})")
        if code_base == "multiple":
            return cls(lambda1=1 / alpha2, lambda2=alpha1, lambda3=alpha1 / alpha2, **kw)
        if code_base == "single":
            return cls(lambda1=1 / alpha1, lambda2=alpha2, lambda3=alpha2 / alpha1, **kw)
        raise ValueError(f"code_base must be 'multiple' or 'single', got {code_base!r}")


# ANT Table 4 (celebrity ablation) as weight settings; "full" is ANT with the celebrity λ of Table 6.
ABLATION_CONFIGS = {
    "A": TrajectoryLossWeights(preserve=0.0, lambda1=1.0, lambda2=0.0, lambda3=0.0, erase_span="all"),
    "B": TrajectoryLossWeights(preserve=0.0, lambda1=1.0, lambda2=0.0, lambda3=0.5, erase_span="all"),
    "C": TrajectoryLossWeights(preserve=0.0, lambda1=1.0, lambda2=0.0, lambda3=0.0),
    "D": TrajectoryLossWeights(preserve=0.0, lambda1=1.0, lambda2=0.0, lambda3=0.5),
    "E": TrajectoryLossWeights(preserve=1.0, lambda1=0.4, lambda2=0.0, lambda3=0.0),
    "full": TrajectoryLossWeights(preserve=1.0, lambda1=0.4, lambda2=0.5, lambda3=0.2),
}


def preserve_target(eps_cond_frozen: torch.Tensor, eps_uncond_frozen: torch.Tensor, eta: float) -> torch.Tensor:
    """``ε*(z, ∅) + η δ*(c)`` — the frozen model's conditional direction, kept (first term of Eq. 3)."""
    return eps_uncond_frozen + eta * (eps_cond_frozen - eps_uncond_frozen)


def erase_target(eps_cond_frozen: torch.Tensor, eps_uncond_frozen: torch.Tensor, eta: float) -> torch.Tensor:
    """``ε*(z, ∅) − η δ*(c)`` — the condition direction reversed (second term of Eq. 3, the ESD target)."""
    return eps_uncond_frozen - eta * (eps_cond_frozen - eps_uncond_frozen)


def trajectory_loss_terms(weights: TrajectoryLossWeights, *, eps_cond_late, frozen_cond_late, frozen_uncond_late,
                          eps_cond_early=None, frozen_cond_early=None, frozen_uncond_early=None,
                          eps_uncond_early=None, eps_uncond_late=None) -> dict[str, torch.Tensor]:
    """The weighted terms of Eq. (3) and their sum (key ``"loss"``).

    ``eps_*`` come from the model being trained (with gradient), ``frozen_*`` from θ* (no gradient; they are
    detached here as well). "late" tensors are at (z₂, t₂), "early" at (z₁, t₁).
    """
    sg = torch.Tensor.detach
    terms: dict[str, torch.Tensor] = {}
    terms["erase"] = weights.lambda1 * F.mse_loss(
        eps_cond_late, sg(erase_target(frozen_cond_late, frozen_uncond_late, weights.eta)))
    if weights.preserve > 0:
        terms["preserve"] = weights.preserve * F.mse_loss(
            eps_cond_early, sg(preserve_target(frozen_cond_early, frozen_uncond_early, weights.eta)))
    if weights.lambda2 > 0:
        terms["uncond_early"] = weights.lambda2 * F.mse_loss(eps_uncond_early, sg(frozen_uncond_early))
    if weights.lambda3 > 0:
        terms["uncond_late"] = weights.lambda3 * F.mse_loss(eps_uncond_late, sg(frozen_uncond_late))
    terms["loss"] = sum(terms.values())
    return terms


def draw_stage_steps(t_prime: int, num_inference_steps: int, generator: torch.Generator,
                     erase_span: str = "late", stage_split: str = "paper") -> tuple[int, int]:
    """Draw the paper steps (s₁ early/preserve, s₂ late/erase) for one update.

    ``stage_split="paper"`` (default, Eq. 3): s₁ ~ U{t′+1 … N}, s₂ ~ U{1 … t′} — so the preserve branch always sees
    a train timestep above t′·T/N. ``"ant_single_released"`` reproduces ANT ``Single/``'s inverted split:
    preserve on the last N − t′ steps, erase on the others.
    """
    n = num_inference_steps
    if not (1 <= t_prime < n):
        raise ValueError(f"t'={t_prime!r} must leave both stages non-empty: expected 1 <= t' < {n}")
    if stage_split not in STAGE_SPLITS:
        raise ValueError(f"stage_split must be one of {STAGE_SPLITS}, got {stage_split!r}")

    def uniform(lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    if stage_split == "paper":
        early, late = uniform(t_prime + 1, n), uniform(1, t_prime)
    else:
        k = n - t_prime  # the release's before_step
        early, late = uniform(1, k), uniform(k + 1, n)
    if erase_span == "all":
        late = uniform(1, n)
    return early, late
