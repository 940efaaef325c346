"""Forget-Me-Not attention re-steering (Zhang et al., "Forget-Me-Not: Learning to Forget in Text-to-Image
Diffusion Models", CVPRW 2024, §3 "Attention Re-steering").

With ``A_l`` the cross-attention probabilities of layer ``l`` (softmax(QKᵀ/√d) over text tokens) and ``𝒯`` the
positions of the concept's tokens, FMN minimises the attention the image pays to the concept:

    L_FMN = ‖ [A_l[:, :, 𝒯]]_l ‖_F     (Frobenius norm over every head, query and layer, concatenated)

The norm is not squared, as the released ``train_attn.py`` computes it; with ``use_pooler`` the end-of-text token and
every padding position after it count as concept positions too (CLIP's pooled output carries the whole prompt).
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["attention_resteering_loss", "concept_token_mask"]


def concept_token_mask(token_ids: torch.Tensor, concept_ids: Sequence[int], lengths: torch.Tensor | Sequence[int],
                       include_pooler: bool = True) -> torch.Tensor:
    """Bool ``[B, L]``: positions of every occurrence of ``concept_ids`` in each prompt's ``token_ids`` ``[B, L]``
    and, with ``include_pooler``, the end-of-text position ``lengths[b] − 1`` and all padding after it.

    ``lengths`` counts the prompt's tokens including start and end tokens (the attention-mask sum). Rows where the
    concept does not occur raise a ValueError naming them.
    """
    concept_ids = [int(i) for i in concept_ids]
    if not concept_ids:
        raise ValueError("concept_ids is empty: the concept text tokenised to nothing")
    if token_ids.ndim != 2:
        raise ValueError(f"token_ids must be [B, L], got shape {tuple(token_ids.shape)}")
    batch, length = token_ids.shape
    lengths = [int(n) for n in lengths]
    if len(lengths) != batch:
        raise ValueError(f"got {len(lengths)} lengths for {batch} prompts")
    mask = torch.zeros(batch, length, dtype=torch.bool)
    n = len(concept_ids)
    rows = token_ids.tolist()
    missing = []
    for b, row in enumerate(rows):
        found = False
        for i in range(length - n + 1):
            if row[i:i + n] == concept_ids:
                mask[b, i:i + n] = True
                found = True
        if not found:
            missing.append(b)
        if include_pooler:
            mask[b, max(lengths[b] - 1, 0):] = True
    if missing:
        raise ValueError(f"the concept's tokens {concept_ids} do not occur in prompt rows {missing}")
    return mask


def attention_resteering_loss(attention_probs: Sequence[torch.Tensor], token_mask: torch.Tensor) -> torch.Tensor:
    """``‖A[𝒯]‖_F`` over all recorded cross-attention layers (FMN §3).

    Args:
        attention_probs: one ``[B·heads, Q_l, L]`` tensor per cross-attention call, batch-major over heads (the
            layout of diffusers' ``head_to_batch_dim``).
        token_mask: bool ``[B, L]`` concept positions (:func:`concept_token_mask`).
    """
    if not attention_probs:
        raise ValueError("no attention probabilities were recorded: did the UNet run with the recorder installed?")
    if token_mask.ndim != 2 or token_mask.dtype != torch.bool:
        raise ValueError(f"token_mask must be a bool [B, L] tensor, got {token_mask.dtype} {tuple(token_mask.shape)}")
    batch, length = token_mask.shape
    selected = []
    for probs in attention_probs:
        if probs.ndim != 3 or probs.shape[-1] != length or probs.shape[0] % batch:
            raise ValueError(f"attention probabilities of shape {tuple(probs.shape)} do not match "
                             f"{batch} prompts of {length} tokens")
        heads = probs.shape[0] // batch
        per_prompt = probs.reshape(batch, heads, probs.shape[1], length).permute(0, 3, 1, 2)  # [B, L, heads, Q]
        selected.append(per_prompt[token_mask.to(probs.device)].flatten())
    return torch.linalg.vector_norm(torch.cat(selected))
