"""Parameter masks: gradient saliency maps and their intersection (ANT Eq. 4–6, SalUn).

Masks are ``dict[parameter name -> bool tensor]``; intersections are streamed (AND-ed one map at a time), so no
set of full-precision gradient dumps is ever kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import torch

from unlearnkit.core.errors import UnlearnkitError
from unlearnkit.core.validation import check_choice, check_number

Mask = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SaliencyThreshold:
    """How a gradient map becomes a saliency map.

    ``gamma``: ANT Eq. (4), ``1(|∇θ L| ≥ γ)`` with an absolute γ > 0. ``keep_fraction``: keep the top fraction of
    ``|∇θ L|`` per tensor (SalUn-style, scale-free; the ANT release keeps 50 % per tensor). Give exactly one.
    ``select="top"`` keeps the largest gradients; ``"ant_released"`` keeps the *smallest* half as ANT's release
    does — a compatibility mode only.
    """

    gamma: float | None = None
    keep_fraction: float | None = None
    select: str = "top"

    def __post_init__(self):
        if (self.gamma is None) == (self.keep_fraction is None):
            raise UnlearnkitError("give exactly one of gamma (absolute threshold) and keep_fraction (per-tensor top-k)")
        check_number(self.gamma, "gamma", positive=True, allow_none=True)   # ANT Eq. (4)
        check_number(self.keep_fraction, "keep_fraction", above=0, below=1, allow_none=True)
        check_choice(self.select, "select", ("top", "ant_released"))


def threshold_gradient(grad: torch.Tensor, rule: SaliencyThreshold) -> torch.Tensor:
    """Bool mask of one tensor's salient entries under ``rule``."""
    g = grad.detach().abs()
    if rule.gamma is not None:
        return g >= rule.gamma
    k = max(1, int(rule.keep_fraction * g.numel()))
    flat = g.flatten()
    if rule.select == "ant_released":
        flat = -flat
    # kthvalue on the negated tensor finds the k-th largest without sorting the whole tensor
    kth = torch.kthvalue(-flat.float(), k).values
    keep = (-flat.float()) <= kth
    return keep.view_as(g)


def saliency_map(grads: Mapping[str, torch.Tensor], rule: SaliencyThreshold) -> Mask:
    """ANT Eq. (4): ``M = 1(|∇θ L| ≥ γ)`` for every parameter that received a gradient."""
    return {name: threshold_gradient(g, rule) for name, g in grads.items() if g is not None}


def intersect_saliency_maps(maps: Iterable[Mask]) -> tuple[Mask, list[int]]:
    """ANT Eq. (5): ``M* = ∩ M_{c_i, s_j}``, streamed; also the active-parameter count after each map (Fig. 4)."""
    result: Mask | None = None
    counts: list[int] = []
    for m in maps:
        if result is None:
            result = {k: v.clone() for k, v in m.items()}
        else:
            if m.keys() != result.keys():
                raise ValueError("saliency maps cover different parameters; compute them over the same scope")
            for k in result:
                result[k] &= m[k]
        counts.append(count_active(result))
    if result is None:
        raise ValueError("no saliency maps to intersect: give at least one prompt and one seed")
    return result, counts


def count_active(mask: Mask) -> int:
    return int(sum(int(v.sum()) for v in mask.values()))


def nonempty(mask: Mask) -> Mask:
    """Drop tensors with no active entry (they need neither an optimiser slot nor a stored original)."""
    return {k: v for k, v in mask.items() if bool(v.any())}


def check_mask_in_scope(mask: Mask, scoped: Mapping[str, torch.Tensor], scope: str) -> None:
    """Raise a KeyError naming the first mask entries that lie outside the parameter scope."""
    unknown = [k for k in mask if k not in scoped]
    if unknown:
        raise KeyError(f"mask names parameters outside scope {scope!r}: {unknown[:3]}")


def mask_gradients_(params: Mapping[str, torch.nn.Parameter], mask: Mask) -> None:
    """In place: ``∇θ ← M ⊙ ∇θ`` (ANT Eq. 6)."""
    for name, p in params.items():
        if p.grad is not None and name in mask:
            p.grad.mul_(mask[name].to(p.grad.device))


def masks_from_grads(grad_maps: Iterator[Mapping[str, torch.Tensor]], rule: SaliencyThreshold) -> Iterator[Mask]:
    for grads in grad_maps:
        yield saliency_map(grads, rule)
