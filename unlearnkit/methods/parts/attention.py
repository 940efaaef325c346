"""Cross-attention probabilities recorded during a UNet call (FMN's loss, MACE's attention objective)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from unlearnkit.core.params import cross_attention_modules

__all__ = ["AttentionProbabilityRecorder", "recording_cross_attention"]


class AttentionProbabilityRecorder(AttnProcessor):
    """diffusers' plain :class:`AttnProcessor` computation that also appends each call's attention probabilities
    ``softmax(QKᵀ/√d)`` ``[B·heads, Q, L]`` to ``store`` (with their autograd graph)."""

    def __init__(self, store: list[torch.Tensor]):
        super().__init__()
        self.store = store

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, context_length, _ = context.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, context_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.store.append(probs)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def recording_cross_attention(unet: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block every ``attn2`` module records its attention probabilities into the yielded list (one
    entry per call, in call order); the original processors are put back afterwards."""
    modules = cross_attention_modules(unet)
    if not modules:
        raise ValueError("the UNet has no cross-attention (attn2) modules to record")
    originals = {name: module.processor for name, module in modules.items()}
    store: list[torch.Tensor] = []
    recorder = AttentionProbabilityRecorder(store)
    for module in modules.values():
        module.set_processor(recorder)
    try:
        yield store
    finally:
        for name, module in modules.items():
            module.set_processor(originals[name])
