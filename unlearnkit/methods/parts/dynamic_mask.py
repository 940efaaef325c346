"""Dynamic gradient mask, Sculpting Memory §3.2 (Eq. 1–4).

A bool mask over each trainable tensor decides which gradient entries reach the optimiser (Eq. 1,
``g̃ = M_dyn ⊙ g``, applied by multiplying ``.grad`` after ``backward``). The mask life cycle:

1. **warm-up** — gradients are accumulated, ``A⁽ᵗ⁺¹⁾ = A⁽ᵗ⁾ + g⁽ᵗ⁾`` (Eq. 2), with no optimiser step;
2. **initialisation** — ``M = φ(A)`` (Eq. 3): the ``keep_fraction`` entries with the largest ``|A|`` are active;
3. **drop / grow** every ``update_freq`` steps inside the update window: per tensor, the ``n`` active entries with
   the smallest ``|A|`` are dropped and the ``n`` inactive entries with the largest ``|A|`` grown,
   ``n = ⌊τ(t)·#active⌋`` with the cosine-decayed turnover ``τ(t) = r_m/2·(1 + cos(tπ/T_end))`` (Eq. 4).

Selections use ``torch.topk`` on exactly ``k`` entries (never a threshold), so the number of active entries is the
same before and after every update — ties included (an all-zero accumulator still yields exactly ``k``).
The accumulator holds the *raw, unmasked* gradients (growing needs the gradient of inactive entries) and is
reset after initialisation and after every update, as the release does.

``keep_fraction`` is the density (the fraction of entries whose gradient passes); the paper's "sparsity" ``s``
(Table 5) is ``keep_fraction = 1 − s`` (:func:`keep_fraction_from_sparsity`, the dynamic-sparse-training reading;
at the default 50 % both readings agree).

Options reproducing the authors' release: ``accumulate="abs_of_sum"`` (importance
``|Σg|``; the default, which is also Eq. 2 literally) vs ``"sum_of_abs"``; ``ranking="per_tensor"`` (default) vs
``"global"`` for the initial mask; ``tau_per="step"`` (Eq. 4, paper) vs ``"epoch"`` (release: ``t`` = 0-based
epoch index, ``T_end`` = number of epochs); ``update_window`` (release: updates only in the first 80 % of training).
A **fixed mask** (the paper's ablation) is the same object with ``update_freq=None``.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

__all__ = [
    "ACCUMULATE_MODES",
    "RANKINGS",
    "TAU_SCHEDULES",
    "keep_fraction_from_sparsity",
    "update_ratio",
    "top_k_mask",
    "DynamicMask",
]

ACCUMULATE_MODES = ("abs_of_sum", "sum_of_abs")
RANKINGS = ("per_tensor", "global")
TAU_SCHEDULES = ("step", "epoch")
ADAM_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 1):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {value!r}")
    return float(value)


def keep_fraction_from_sparsity(sparsity: float) -> float:
    """``keep_fraction = 1 − sparsity`` (sparsity = fraction of gradient entries masked out; 50 % ⇔ 0.5)."""
    return 1.0 - _check_fraction(sparsity, "sparsity")


def update_ratio(t: float, r_m: float, t_end: float) -> float:
    """Cosine-decayed turnover fraction, Eq. (4), Sculpting Memory: ``τ = r_m/2·(1 + cos(tπ/T_end))``.

    ``τ(0) = r_m``, ``τ(T_end/2) = r_m/2``, ``τ(T_end) = 0``.
    """
    if not t_end > 0:
        raise ValueError(f"T_end must be > 0, got {t_end!r}")
    return r_m / 2.0 * (1.0 + math.cos(t * math.pi / t_end))


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask (shape of ``scores``) with exactly ``k`` entries set: those with the largest scores.

    ``torch.topk`` picks exactly ``k`` indices even among ties; for ``k > n/2`` the ``n − k`` smallest are selected
    and the mask inverted, so at most half the tensor is ever indexed (no full sort).
    """
    flat = scores.detach().flatten()
    n = flat.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k={k!r} must lie in [0, {n}]")
    mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k == n:
        mask.fill_(True)
    elif 0 < k <= n - k:
        mask[torch.topk(flat, k, largest=True, sorted=False).indices] = True
    elif k > 0:
        mask[torch.topk(flat, n - k, largest=False, sorted=False).indices] = True
        mask = ~mask
    return mask.view_as(scores)


class DynamicMask:
    """Gradient mask over named parameters that is initialised from, and rewired by, accumulated gradients.

    Typical use per training step (see :mod:`unlearnkit.methods.sculpting`)::

        loss.backward()
        mask.accumulate()                  # Eq. 2, raw gradients
        if step == warmup_steps: mask.initialise()            # Eq. 3
        mask.mask_gradients(); optimizer.step()               # Eq. 1
        if mask.update_due(step): mask.update(step, optimizer) # drop / grow with τ(t), Eq. 4

    Args:
        params: ``name → Parameter`` to mask (e.g. ``params.select_parameters(unet, "xattn")``).
        keep_fraction / sparsity: give one; ``keep_fraction = 1 − sparsity`` (see the module docstring).
        update_freq: steps between drop/grow updates; ``None`` = a fixed mask (no updates).
        r_m: initial turnover ratio of Eq. (4) (release: 0.2).
        total_steps: ``T_end`` — training steps of the stage, counted from the first warm-up step.
        steps_per_epoch / epochs: needed for ``tau_per="epoch"``.
        update_window: updates happen only at steps ``t ≤ update_window · T_end`` (release: 0.8).
        zero_dropped_optimizer_state: zero the Adam moments of dropped entries, so they stop moving at once
            (release: ``False`` — dropped entries coast on their moments for a while).
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter], keep_fraction: float | None = None,
                 sparsity: float | None = None, *, update_freq: int | None = 100, r_m: float = 0.2,
                 total_steps: int | None = None, accumulate: str = "abs_of_sum", ranking: str = "per_tensor",
                 tau_per: str = "step", steps_per_epoch: int | None = None, epochs: int | None = None,
                 update_window: float = 0.8, zero_dropped_optimizer_state: bool = False):
        if (keep_fraction is None) == (sparsity is None):
            raise ValueError(f"give exactly one of keep_fraction and sparsity, got keep_fraction={keep_fraction!r}, "
                             f"sparsity={sparsity!r}")
        self.keep_fraction = (_check_fraction(keep_fraction, "keep_fraction") if keep_fraction is not None
                              else keep_fraction_from_sparsity(sparsity))
        if not params:
            raise ValueError("DynamicMask needs at least one parameter to mask")
        if update_freq is not None and (isinstance(update_freq, bool) or not isinstance(update_freq, int)
                                        or update_freq <= 0):
            raise ValueError(f"update_freq must be a positive integer (or None for a fixed mask), got {update_freq!r}")
        if not 0 <= r_m <= 1:
            raise ValueError(f"r_m must lie in [0, 1], got {r_m!r}")
        if accumulate not in ACCUMULATE_MODES:
            raise ValueError(f"accumulate must be one of {ACCUMULATE_MODES}, got {accumulate!r}")
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        if tau_per not in TAU_SCHEDULES:
            raise ValueError(f"tau_per must be one of {TAU_SCHEDULES}, got {tau_per!r}")
        if not 0 < update_window <= 1:
            raise ValueError(f"update_window must lie in (0, 1], got {update_window!r}")
        if update_freq is not None:
            if not (isinstance(total_steps, int) and total_steps > 0):
                raise ValueError(f"a dynamic mask needs total_steps (T_end) > 0, got {total_steps!r}")
            if tau_per == "epoch" and not (isinstance(steps_per_epoch, int) and steps_per_epoch > 0
                                           and isinstance(epochs, int) and epochs > 0):
                raise ValueError(f"tau_per='epoch' needs positive steps_per_epoch and epochs, got "
                                 f"{steps_per_epoch!r}, {epochs!r}")
        self.params = dict(params)
        self.update_freq, self.r_m, self.total_steps = update_freq, float(r_m), total_steps
        self.accumulate_mode, self.ranking, self.tau_per = accumulate, ranking, tau_per
        self.steps_per_epoch, self.epochs, self.update_window = steps_per_epoch, epochs, update_window
        self.zero_dropped_optimizer_state = zero_dropped_optimizer_state
        # float32 accumulators even for half-precision weights: small gradients must not vanish in the sum
        self.accumulated = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        self.masks: dict[str, torch.Tensor] | None = None

    # --- Eq. (2) ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def accumulate(self) -> None:
        """``A ← A + g`` (``"abs_of_sum"``) or ``A ← A + |g|`` (``"sum_of_abs"``) from the current ``.grad``
        (raw, before masking)."""
        for n, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad.detach().float()
            self.accumulated[n].add_(g.abs() if self.accumulate_mode == "sum_of_abs" else g)

    def importance(self, name: str) -> torch.Tensor:
        """``|A|`` of one tensor: the score that ranks entries for init, drop and grow."""
        return self.accumulated[name].abs()

    def reset_accumulator(self) -> None:
        for a in self.accumulated.values():
            a.zero_()

    # --- Eq. (3) ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def initialise(self) -> dict[str, torch.Tensor]:
        """``M = φ(A)``, Eq. (3): keep the top ``keep_fraction`` of ``|A|`` (per tensor or over all tensors);
        then reset ``A``. Returns the masks."""
        if self.ranking == "per_tensor":
            self.masks = {n: top_k_mask(self.importance(n), max(1, int(self.keep_fraction * p.numel())))
                          for n, p in self.params.items()}
        else:
            scores = torch.cat([self.importance(n).flatten() for n in self.params])
            joint = top_k_mask(scores, max(1, int(self.keep_fraction * scores.numel())))
            self.masks, start = {}, 0
            for n, p in self.params.items():
                self.masks[n] = joint[start:start + p.numel()].view_as(p)
                start += p.numel()
        self.reset_accumulator()
        return self.masks

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Use given bool masks (e.g. a precomputed fixed mask) instead of :meth:`initialise`."""
        missing = [n for n in self.params if n not in masks]
        if missing:
            raise KeyError(f"masks lack parameters {missing[:3]}")
        self.masks = {n: masks[n].to(self.params[n].device, torch.bool).view_as(self.params[n])
                      for n in self.params}

    @property
    def initialised(self) -> bool:
        return self.masks is not None

    def active_count(self) -> int:
        """Number of active (trainable) entries over all tensors."""
        self._require_masks()
        return int(sum(int(m.sum()) for m in self.masks.values()))

    # --- Eq. (1) ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def mask_gradients(self) -> None:
        """``∇θ ← M_dyn ⊙ ∇θ`` in place, Eq. (1)."""
        self._require_masks()
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.masks[n])

    # --- Eq. (4) and drop / grow -------------------------------------------------------------------------------
    def tau(self, step: int) -> float:
        """Turnover fraction at global step ``step`` (1-based, warm-up included): Eq. (4) with ``t = step`` and
        ``T_end = total_steps``, or with the 0-based epoch index over the number of epochs (``tau_per="epoch"``)."""
        if self.tau_per == "epoch":
            return update_ratio((step - 1) // self.steps_per_epoch, self.r_m, self.epochs)
        return update_ratio(step, self.r_m, self.total_steps)

    def update_due(self, step: int) -> bool:
        """True every ``update_freq`` steps while ``step ≤ update_window · T_end`` (and the mask exists)."""
        if self.update_freq is None or self.masks is None:
            return False
        return step % self.update_freq == 0 and step <= int(self.update_window * self.total_steps)

    @torch.no_grad()
    def update(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> dict:
        """Drop the ``n`` active entries with the smallest ``|A|`` and grow the ``n`` inactive ones with the largest,
        per tensor, ``n = min(⌊τ(t)·#active⌋, #inactive)``; then reset ``A``. Returns ``{"tau", "turnover"}``."""
        self._require_masks()
        tau = self.tau(step)
        turnover = 0
        for name, mask in self.masks.items():
            flat = mask.view(-1)
            active = flat.nonzero().squeeze(1)
            inactive = (~flat).nonzero().squeeze(1)
            n = min(int(tau * active.numel()), inactive.numel())
            if n <= 0:
                continue
            score = self.importance(name).view(-1)
            dropped = active[torch.topk(score[active], n, largest=False, sorted=False).indices]
            grown = inactive[torch.topk(score[inactive], n, largest=True, sorted=False).indices]
            flat[dropped] = False
            flat[grown] = True
            turnover += n
            if optimizer is not None and self.zero_dropped_optimizer_state:
                self._zero_optimizer_state(optimizer, self.params[name], dropped)
        self.reset_accumulator()
        return {"tau": tau, "turnover": turnover}

    @staticmethod
    def _zero_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter,
                              indices: torch.Tensor) -> None:
        state = optimizer.state.get(param, {})
        for key in ADAM_STATE_KEYS:
            if key in state and torch.is_tensor(state[key]) and state[key].shape == param.shape:
                state[key].view(-1)[indices] = 0

    def _require_masks(self) -> None:
        if self.masks is None:
            raise RuntimeError("the dynamic mask is not initialised yet: call initialise() after the warm-up")
