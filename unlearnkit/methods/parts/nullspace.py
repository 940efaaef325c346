"""SepME weight decoupling: null-space bases ``S_p`` and the increments built on them — SepME §3.2, Eq. (7)–(10).

For concept ``i`` the constraint matrix stacks the token rows of the text embeddings that its increment must not
touch (Eq. 8)::

    A_i = [c_∅; c_1; …; c_{i−1}; c_{i+1}; …; c_N]        (every token row of every text, [(1+m)·L, d_in])

and the particular solutions are a basis of ``{s : A_i s = 0}`` (``S_p ∈ R^{d_in × (d_in − r)}``, ``r = rank A_i``).
A ``to_k`` / ``to_v`` increment of the form (Eq. 10, in torch's ``[d_out, d_in]`` weight layout)

    ΔW = w · (β S_pᵀ),          w ∈ R^{d_out × (d_in − r)}

then maps every token row of ``c_∅`` and of the other concepts to exactly zero, ``ΔW e = 0`` — so keys and values,
hence the UNet's prediction, are unchanged for those texts (Eq. 6, second and third conditions).

Solved by SVD in float64: ``A = U Σ Vᵀ``, rank ``r = #{σ_k > rtol · σ_max}`` (a *relative* tolerance), and ``S_p`` =
the right singular vectors of the discarded singular values (orthonormal, so ``‖A S_p‖ ≤ rtol · σ_max ·
√(#discarded)``), each column of unit length as the paper prescribes. The guarantee covers the *exact* texts stacked
in ``A``, not paraphrases of them.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["DEFAULT_RANK_RTOL", "check_protected_texts", "constraint_matrix", "particular_solutions",
           "residual_ratio", "decoupled_increment"]

DEFAULT_RANK_RTOL = 1e-6


def _check_rtol(rtol: float) -> None:
    if not isinstance(rtol, (int, float)) or not (0 < rtol < 1):
        raise ValueError(f"rank tolerance rtol must lie in (0, 1) (relative to the largest singular value), "
                         f"got {rtol!r}")


def check_protected_texts(erased: str, protected: Sequence[str]) -> list[str]:
    """Validate the texts stacked into ``A`` for erasing ``erased``: no duplicates and not the erased text itself
    (its increment would then be forced to leave it unchanged)."""
    protected = list(protected)
    bad = [t for t in protected if not isinstance(t, str)]
    if bad:
        raise TypeError(f"protected texts must be strings, got {bad[:3]!r}")
    seen, duplicates = set(), []
    for text in protected:
        if text in seen:
            duplicates.append(text)
        seen.add(text)
    if duplicates:
        raise ValueError(f"duplicate concepts in the constraint matrix A: {sorted(set(duplicates))!r}; "
                         f"list every concept once")
    if erased in seen:
        raise ValueError(f"the erased concept {erased!r} is also among the protected texts {protected!r}; its "
                         f"increment could then not change it")
    return protected


def constraint_matrix(embeddings, texts: Sequence[str]) -> torch.Tensor:
    """``A`` of Eq. (8): every token row of the text embeddings of ``texts``, ``[len(texts) · L, d_in]`` float64.

    ``embeddings`` is a :class:`~unlearnkit.core.diffusion.TextEmbeddingCache` (or any callable ``texts -> [n, L, d]``);
    padding positions are included, as the UNet attends to all ``L`` positions.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("no texts for the constraint matrix A; it holds at least the empty prompt c_∅")
    rows = embeddings(texts)
    return rows.reshape(-1, rows.shape[-1]).detach().double().cpu()


def particular_solutions(A: torch.Tensor, rtol: float = DEFAULT_RANK_RTOL) -> torch.Tensor:
    """Unit-norm basis ``S_p`` ``[d_in, d_in − r]`` of the null space of ``A`` ``[n, d_in]`` (SepME Eq. 8).

    The rank ``r`` counts singular values above ``rtol · σ_max``. Raises a ValueError when ``rtol`` is outside
    (0, 1) or when nothing is left (``r = d_in``: the protected texts span the whole embedding space).
    """
    _check_rtol(rtol)
    if not isinstance(A, torch.Tensor) or A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"A must be a non-empty 2-D tensor [rows, d_in], got "
                         f"{tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__}")
    A = A.double()
    _, sigma, vh = torch.linalg.svd(A, full_matrices=True)
    d_in = A.shape[1]
    rank = int((sigma > rtol * sigma[0]).sum()) if sigma.numel() and sigma[0] > 0 else 0
    if rank >= d_in:
        raise ValueError(f"no null space left: A ({A.shape[0]} rows) has rank {rank} = d_in = {d_in} at "
                         f"rtol={rtol!r}; protect fewer texts or raise rtol")
    basis = vh[rank:].T.contiguous()                 # [d_in, d_in − r]
    return basis / torch.linalg.vector_norm(basis, dim=0, keepdim=True)


def residual_ratio(A: torch.Tensor, basis: torch.Tensor) -> float:
    """``‖A S_p‖_F / (‖A‖_F ‖S_p‖_F)``: how far ``S_p`` is from the exact null space (0 = exact)."""
    A, basis = A.double(), basis.double().to(A.device)
    return float(torch.linalg.matrix_norm(A @ basis) / (torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(basis)))


def decoupled_increment(w: torch.Tensor, basis: torch.Tensor, beta: float) -> torch.Tensor:
    """``ΔW = w · (β S_pᵀ)`` (Eq. 10 in torch's ``[d_out, d_in]`` layout): ``w`` ``[d_out, k]``, ``S_p`` ``[d_in, k]``."""
    if w.shape[-1] != basis.shape[-1]:
        raise ValueError(f"w has {w.shape[-1]} combination weights per row but S_p has {basis.shape[-1]} solutions")
    return w @ (beta * basis.to(w).T)
