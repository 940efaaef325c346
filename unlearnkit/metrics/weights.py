"""Size of a weight edit, ``‖Δθ‖_p = ‖Δθ‖₁ / M`` — SepME §4 "Evaluation metrics", Tables 1–2.

``M`` is the number of modified tensors ("layers" in SepME). Given a dict of deltas (or an
:class:`~unlearnkit.core.edits.Edit`), every tensor in it counts as modified; given two state dicts, the tensors
that differ do.
"""
from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["weight_deltas", "delta_norm"]


def weight_deltas(edited: Mapping[str, torch.Tensor], original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{name: edited − original}`` for the tensors that differ (shared names only; shapes must agree)."""
    missing = sorted(set(edited) ^ set(original))
    if missing:
        raise KeyError(f"state dicts hold different tensors, e.g. {missing[:5]}")
    deltas = {}
    for name, value in edited.items():
        before = original[name]
        if value.shape != before.shape:
            raise ValueError(f"tensor {name!r} changed shape: {tuple(before.shape)} → {tuple(value.shape)}")
        delta = value.detach().double() - before.detach().to(value.device).double()
        if torch.any(delta != 0):
            deltas[name] = delta
    return deltas


def delta_norm(edited, original: Mapping[str, torch.Tensor] | None = None) -> float:
    """``‖Δθ‖₁ / M`` from two state dicts (``edited``, ``original``), or from deltas alone (``original=None``;
    ``edited`` is then a ``{name: Δθ}`` mapping or an ``Edit``). 0 when nothing was modified."""
    if original is None:
        deltas = getattr(edited, "deltas", edited)
        if not isinstance(deltas, Mapping):
            raise TypeError(f"expected a mapping of deltas or an Edit, got {type(edited).__name__}")
    else:
        deltas = weight_deltas(edited, original)
    if not deltas:
        return 0.0
    l1 = sum(float(delta.detach().double().abs().sum()) for delta in deltas.values())
    return l1 / len(deltas)
