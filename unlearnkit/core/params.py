"""Which UNet parameters a method may touch, chosen by diffusers parameter name.

A scope is a predicate over names such as ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight``.
In a diffusers ``BasicTransformerBlock`` ``attn1`` is self-attention and ``attn2`` is cross-attention (the only
place text enters the UNet). Names are plain diffusers names, i.e. taken before any peft adapter is injected.

=============  ==========================================================  =================================
scope          parameters                                                  used by
=============  ==========================================================  =================================
``xattn``      every parameter of every ``attn2`` module                   Sculpting Memory, ESD-x, G-CiRs
               (to_q, to_k, to_v, to_out.0; weights and the to_out bias)
``xattn_kv``   ``attn2.to_k.weight`` and ``attn2.to_v.weight`` only        SepME, MACE, UCE, ESD-x-strict
``attn_all``   to_q / to_k / to_v / to_out.0 of ``attn1`` and ``attn2``    ANT LoRA (targets as trained)
``unet``       every parameter                                             ANT Single (full fine-tune)
``non_xattn``  every parameter outside ``attn2``                           ESD-u
=============  ==========================================================  =================================

``non_xattn`` follows the diffusers ESD rewrite (``esd-u`` = "not attn2") and is the exact complement of
``xattn``. The original CompVis ESD script (``noxattn``) additionally leaves out ``time_embed`` and the output
head (``out.``); we do not, so that ``non_xattn`` + ``xattn`` == ``unet`` holds and ESD-u trains what its
paper describes (all non-cross-attention weights).
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = [
    "SCOPES",
    "scope_names",
    "select_parameters",
    "count_parameters",
    "cross_attention_modules",
]

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")


def _is_cross_attention(name: str) -> bool:
    """True for any parameter inside a module named ``attn2``."""
    return "attn2" in name.split(".")


def _is_cross_attention_key_value_weight(name: str) -> bool:
    """True for ``….attn2.to_k.weight`` and ``….attn2.to_v.weight`` (the text-facing projections)."""
    parts = name.split(".")
    return len(parts) >= 3 and parts[-3] == "attn2" and parts[-2] in ("to_k", "to_v") and parts[-1] == "weight"


def _is_attention_projection(name: str) -> bool:
    """True for to_q / to_k / to_v / to_out.0 parameters of ``attn1`` or ``attn2``."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-2]):
        if part in ("attn1", "attn2"):
            projection = parts[i + 1]
            if projection == "to_out":
                return parts[i + 2] == "0"
            return projection in ATTENTION_PROJECTIONS
    return False


def _is_any(name: str) -> bool:
    """Every parameter."""
    return True


def _is_outside_cross_attention(name: str) -> bool:
    """Every parameter not in an ``attn2`` module (ESD-u)."""
    return not _is_cross_attention(name)


SCOPES: dict[str, Callable[[str], bool]] = {
    "xattn": _is_cross_attention,
    "xattn_kv": _is_cross_attention_key_value_weight,
    "attn_all": _is_attention_projection,
    "unet": _is_any,
    "non_xattn": _is_outside_cross_attention,
}


def scope_names() -> list[str]:
    """Names of the parameter scopes, in definition order."""
    return list(SCOPES)


def _scope_predicate(scope: str) -> Callable[[str], bool]:
    if not isinstance(scope, str) or scope not in SCOPES:
        raise ValueError(f"unknown parameter scope {scope!r}; expected one of {scope_names()}")
    return SCOPES[scope]


def select_parameters(unet: torch.nn.Module, scope: str) -> dict[str, torch.nn.Parameter]:
    """Parameters of ``unet`` in ``scope``, as ``name → Parameter`` in ``named_parameters()`` order.

    Selection is by name only; ``requires_grad`` is neither read nor changed.
    """
    in_scope = _scope_predicate(scope)
    return {name: param for name, param in unet.named_parameters() if in_scope(name)}


def count_parameters(unet: torch.nn.Module, scope: str) -> int:
    """Number of scalar parameters of ``unet`` in ``scope`` (e.g. 19,169,280 for ``xattn_kv`` on SD v1.4)."""
    return sum(param.numel() for param in select_parameters(unet, scope).values())


def cross_attention_modules(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Every cross-attention module (``…attn2``) of ``unet``, as ``name → Attention`` in ``named_modules()`` order.

    SD v1.4 has 16: two per cross-attention down block, one in the mid block, three per cross-attention up block.
    UCE, MACE and SepME edit their ``to_k`` / ``to_v`` projections.
    """
    from diffusers.models.attention_processor import Attention

    return {
        name: module
        for name, module in unet.named_modules()
        if name.split(".")[-1] == "attn2" and isinstance(module, Attention)
    }
