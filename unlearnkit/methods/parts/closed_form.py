"""Closed-form edits of a linear projection: the regularised least-squares solve shared by UCE, MACE and ANT Eq. 7.

For a projection ``W`` (``d_out × d_in``, e.g. an ``attn2.to_k`` weight with ``d_in`` = text width) the edited
matrix minimises

    λ‖W* − W‖²_F + Σ_i w_i ‖W* c_i − v_i‖²

over pairs (context ``c_i`` ∈ R^{d_in}, target ``v_i`` ∈ R^{d_out}) with weights ``w_i``. Setting the gradient to zero
gives the closed form of UCE (Gandikota et al., "Unified Concept Editing in Diffusion Models", WACV 2024, §3)
and of MACE's closed-form fusion, which ANT Eq. (7) reuses:

    W* = (λW + mat1)(λI + mat2)⁻¹,   mat1 = Σ_i w_i v_i c_iᵀ,   mat2 = Σ_i w_i c_i c_iᵀ.

Targets that are the *current* projection of another vector — UCE's erase targets ``v*_e = W c_guide`` and every
preservation term ``v_p = W c_p`` — do not depend on the layer once written as ``W·(Σ w a cᵀ)``; the solver keeps
that ``d_in × d_in`` "mapped" Gram apart, so one accumulator built from text embeddings serves every layer with
the same ``d_in`` and :meth:`ClosedFormSolver.solve` applies it to each layer's own ``W``. Explicit targets (MACE /
ANT fusion: ``v = (W + ΔW_i)c``) are layer specific and fix ``d_out``.

Everything is accumulated and solved in float64: the system matrix is LU-factored once and each layer costs one
triangular solve (no explicit inverse).
"""
from __future__ import annotations

import torch

__all__ = ["ClosedFormSolver"]


def _as_rows(name: str, x: torch.Tensor) -> torch.Tensor:
    """``[n, d]`` (or ``[d]``) as a float64 ``[n, d]`` matrix."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [n, d] matrix, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


def _check_weight(weight: float) -> float:
    weight = float(weight)
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}")
    return weight


class ClosedFormSolver:
    """Accumulate ``mat1 = Σ w v cᵀ`` and ``mat2 = Σ w c cᵀ``; :meth:`solve` returns ``(λW + mat1)(λI + mat2)⁻¹``.

    Args:
        lam: λ ≥ 0, the pull towards the current weights (UCE default 0.5). With λ = 0 the contexts must span
            R^{d_in}, otherwise the system is singular.
        dim: ``d_in``; inferred from the first added context when omitted.
    """

    def __init__(self, lam: float, dim: int | None = None):
        if not float(lam) >= 0:
            raise ValueError(f"lam (λ) must be >= 0, got {lam!r}")
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.lam = float(lam)
        self.dim = dim
        self.device: torch.device | None = None
        self.mat1: torch.Tensor | None = None    # Σ w v cᵀ, explicit targets   [d_out, d_in]
        self.mapped: torch.Tensor | None = None  # Σ w a cᵀ, targets W·a         [d_in, d_in]
        self.mat2: torch.Tensor | None = None    # Σ w c cᵀ                      [d_in, d_in]
        self.count = 0
        self._factor = None                      # LU of (λI + mat2)ᵀ, reset by every add

    # --- accumulating -----------------------------------------------------------------------------------------
    def _init(self, d_in: int, device) -> None:
        if self.dim is None:
            self.dim = d_in
        if d_in != self.dim:
            raise ValueError(f"contexts have width {d_in}, the solver was built for d_in = {self.dim}")
        if self.mat2 is None:
            self.device = torch.device(device)
            self.mat2 = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)
            self.mapped = torch.zeros_like(self.mat2)

    def _add_mat1(self, term: torch.Tensor) -> None:
        if self.mat1 is None:
            self.mat1 = torch.zeros_like(term)
        if term.shape != self.mat1.shape:
            raise ValueError(f"targets have width {term.shape[0]}, earlier targets had {self.mat1.shape[0]}")
        self.mat1 += term

    def add_targets(self, contexts: torch.Tensor, targets: torch.Tensor, weight: float = 1.0) -> "ClosedFormSolver":
        """Pairs ``(c_i, v_i)`` with explicit targets: ``mat1 += w Σ v cᵀ``, ``mat2 += w Σ c cᵀ``.

        ``contexts`` is ``[n, d_in]``, ``targets`` ``[n, d_out]`` (the rows pair up).
        """
        weight = _check_weight(weight)
        c, v = _as_rows("contexts", contexts), _as_rows("targets", targets)
        if c.shape[0] != v.shape[0]:
            raise ValueError(f"got {c.shape[0]} contexts but {v.shape[0]} targets; give one target per context")
        self._init(c.shape[1], c.device)
        c, v = c.to(self.device), v.to(self.device)
        self._add_mat1(weight * v.T @ c)
        self.mat2 += weight * c.T @ c
        self._factor = None
        self.count += c.shape[0]
        return self

    def add_mapped(self, contexts: torch.Tensor, sources: torch.Tensor, weight: float = 1.0) -> "ClosedFormSolver":
        """Pairs whose target is the current projection of a source vector, ``v_i = W a_i`` (UCE erase: ``a = c_guide``).

        ``contexts`` and ``sources`` are ``[n, d_in]``; ``W`` is supplied per layer at :meth:`solve`.
        """
        weight = _check_weight(weight)
        c, a = _as_rows("contexts", contexts), _as_rows("sources", sources)
        if c.shape != a.shape:
            raise ValueError(f"contexts {tuple(c.shape)} and sources {tuple(a.shape)} must have the same shape")
        self._init(c.shape[1], c.device)
        c, a = c.to(self.device), a.to(self.device)
        self.mapped += weight * a.T @ c
        self.mat2 += weight * c.T @ c
        self._factor = None
        self.count += c.shape[0]
        return self

    def add_preserved(self, contexts: torch.Tensor, weight: float = 1.0) -> "ClosedFormSolver":
        """Contexts whose output must not move: ``v_p = W c_p`` (UCE's preservation sum)."""
        return self.add_mapped(contexts, contexts, weight)

    def add_gram(self, mat2: torch.Tensor, mat1: torch.Tensor | None = None, mapped: torch.Tensor | None = None,
                 weight: float = 1.0) -> "ClosedFormSolver":
        """Precomputed Gram pairs (MACE's caches store only these): ``mat2 = Σ c cᵀ`` ``[d_in, d_in]`` with either
        explicit ``mat1 = Σ v cᵀ`` ``[d_out, d_in]`` or ``mapped = Σ a cᵀ`` ``[d_in, d_in]`` (``mapped = mat2`` for
        a preservation cache: targets ``W c``), or neither (pure regularisation of those directions towards 0)."""
        weight = _check_weight(weight)
        m2 = _as_rows("mat2", mat2)
        if m2.shape[0] != m2.shape[1]:
            raise ValueError(f"mat2 must be square [d_in, d_in], got {tuple(m2.shape)}")
        self._init(m2.shape[1], m2.device)
        self.mat2 += weight * m2.to(self.device)
        self._factor = None
        if mat1 is not None:
            m1 = _as_rows("mat1", mat1)
            if m1.shape[1] != self.dim:
                raise ValueError(f"mat1 must be [d_out, {self.dim}], got {tuple(m1.shape)}")
            self._add_mat1(weight * m1.to(self.device))
        if mapped is not None:
            mp = _as_rows("mapped", mapped)
            if mp.shape != m2.shape:
                raise ValueError(f"mapped must be [{self.dim}, {self.dim}], got {tuple(mp.shape)}")
            self.mapped += weight * mp.to(self.device)
        return self

    # --- solving ----------------------------------------------------------------------------------------------
    def _lhs_factor(self):
        """LU factors of ``(λI + mat2)ᵀ``, computed once and shared by every layer solved with this system."""
        if self._factor is None:
            lhs = self.lam * torch.eye(self.dim, dtype=torch.float64, device=self.device) + self.mat2
            lu, pivots, info = torch.linalg.lu_factor_ex(lhs.T)
            if int(info) != 0:
                raise torch.linalg.LinAlgError(
                    f"the fusion system (λI + Σ w c cᵀ) is singular (λ = {self.lam}): the contexts do not span "
                    f"R^{self.dim}; raise λ or add preservation contexts")
            self._factor = (lu, pivots)
        return self._factor

    def solve(self, weight: torch.Tensor, mat1: torch.Tensor | None = None) -> torch.Tensor:
        """``W* = (λW + mat1 + W·mapped)(λI + mat2)⁻¹`` for the layer weight ``W`` ``[d_out, d_in]``.

        ``mat1`` (optional, ``[d_out, d_in]``) adds layer-specific explicit targets ``Σ w v cᵀ`` to those accumulated
        with :meth:`add_targets` — MACE / ANT Eq. (7) fusion passes ``Σ_i ΔW_i G_i`` here, so one Gram system built
        from text embeddings serves every layer. The contexts of such targets must be in ``mat2`` already (e.g.
        via :meth:`add_gram` with ``mapped=G_i`` for the ``W c`` part of ``(W + ΔW_i) c``).

        Computed in float64 as a linear solve ``(λI + mat2)ᵀ W*ᵀ = (λW + mat1 + W·mapped)ᵀ`` (the LU factors of the
        left side are computed once per system and reused across layers); returned in ``W``'s dtype and device.
        """
        if self.mat2 is None:
            raise ValueError("nothing to solve: add context/target pairs or Gram matrices first")
        if weight.ndim != 2 or weight.shape[1] != self.dim:
            raise ValueError(f"weight must be [d_out, {self.dim}], got {tuple(weight.shape)}")
        w = weight.detach().to(self.device, torch.float64)
        rhs = self.lam * w + w @ self.mapped
        for name, extra in (("explicit targets", self.mat1), ("mat1", mat1)):
            if extra is None:
                continue
            if extra.shape != w.shape:
                raise ValueError(f"{name} have shape {tuple(extra.shape)}, the weight has {tuple(w.shape)}")
            rhs = rhs + extra.detach().to(self.device, torch.float64)
        lu, pivots = self._lhs_factor()
        solved = torch.linalg.lu_solve(lu, pivots, rhs.T).T
        return solved.to(weight.device, weight.dtype)
