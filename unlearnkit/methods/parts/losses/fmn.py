"""Forget-Me-Not attention re-steering (Zhang et al., "Forget-Me-Not: Learning to Forget in Text-to-Image
Diffusion Models", CVPRW 2024, §3 "Attention Re-steering").

With ``A_l`` the cross-attention probabilities of layer ``l`` (softmax(QKᵀ/√d) over text tokens) and ``𝒯`` the
positions of the concept's tokens, FMN minimises the attention the image pays to the concept:

    L_FMN = ‖ [A_l[:, :, 𝒯]]_l ‖_F     (Frobenius norm over every head, query and layer, concatenated)

The norm is not squared, as the release computes it; with ``use_pooler`` the end-of-text token and
every padding position after it count as concept positions too (CLIP's pooled output carries the whole prompt).
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["attention_resteering_loss"]


def attention_resteering_loss(attention_probs: Sequence[torch.Tensor], token_mask: torch.Tensor) -> torch.Tensor:
    """``‖A[𝒯]‖_F`` over all recorded cross-attention layers (FMN §3).

    Args:
        attention_probs: one ``[B·heads, Q_l, L]`` tensor per cross-attention call, batch-major over heads (the
            layout of diffusers' ``head_to_batch_dim``).
        token_mask: bool ``[B, L]`` concept positions (:func:`unlearnkit.core.tokens.concept_token_mask`).
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
