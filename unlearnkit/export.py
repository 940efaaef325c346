"""Export an :class:`~unlearnkit.core.edits.Edit` for use outside unlearnkit.

Two formats, both loadable by standard diffusers code:

* ``diffusers`` — the edited pipeline as a diffusers folder (``pipe.save_pretrained``, safetensors weights):
  ``StableDiffusionPipeline.from_pretrained(folder)`` gives the erased model.
* ``lora`` — the edit as a LoRA file in diffusers' format: ``pipe.load_lora_weights(folder)`` on the original
  model applies it (``pipe.fuse_lora()`` merges it). Each delta ``ΔW`` of a linear layer's weight is factored
  by a truncated SVD, ``ΔW ≈ B A`` with ``B = U_r Σ_r`` and ``A = V_rᵀ``; at full rank the factorisation is exact
  up to float rounding. Only linear-layer weights can be LoRA factors: an Edit that also changes biases,
  norms or convolutions must be exported as ``diffusers`` (or those deltas dropped explicitly, and the dropped
  norm is reported).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearnkit.core.edits import Edit
from unlearnkit.core.errors import BadTypeError, UnlearnkitError
from unlearnkit.core.validation import check_choice, check_flag, check_integer

FORMATS = ("diffusers", "lora")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoraFactors:
    """The LoRA state dict (diffusers/peft key layout, without the ``unet.`` prefix) and how well it fits."""

    state_dict: dict[str, torch.Tensor]
    rank: int
    relative_error: float            # ‖ΔW − BA‖_F / ‖ΔW‖_F over all factored layers
    dropped: dict[str, float]        # deltas that are not linear weights: name -> their Frobenius norm


def _linear_module_names(unet: torch.nn.Module) -> set[str]:
    return {name for name, module in unet.named_modules() if isinstance(module, torch.nn.Linear)}


def lora_factors(edit: Edit, unet: torch.nn.Module, rank: int | None = None, drop_non_linear: bool = False) -> LoraFactors:
    """Factor every linear-weight delta of ``edit`` into LoRA matrices of rank ``rank`` (``None`` = exact rank).

    Raises a ValueError naming the deltas a LoRA cannot hold unless ``drop_non_linear`` is set, and before any
    factorisation when the edit is empty, was made for another model's names or shapes, or holds non-finite values.
    """
    check_integer(rank, "rank", minimum=1, allow_none=True)
    check_flag(drop_non_linear, "drop_non_linear")
    _check_exportable(edit, unet)
    linear = _linear_module_names(unet)
    factorable, dropped = {}, {}
    for name, delta in edit.deltas.items():
        module, _, leaf = name.rpartition(".")
        if leaf == "weight" and module in linear and delta.ndim == 2:
            factorable[module] = delta
        else:
            dropped[name] = float(torch.linalg.vector_norm(delta.float()))
    if dropped and not drop_non_linear:
        names = ", ".join(sorted(dropped)[:4]) + (" …" if len(dropped) > 4 else "")
        raise ValueError(f"a LoRA holds only linear-layer weights; edit {edit.name!r} also changes {len(dropped)} "
                         f"other tensors ({names}). Export it with format 'diffusers', or drop them explicitly.")
    if not factorable:
        raise ValueError(f"edit {edit.name!r} changes no linear-layer weight: nothing a LoRA can hold")
    full_rank = max(min(d.shape) for d in factorable.values())
    r = full_rank if rank is None else rank
    state, residual, total = {}, 0.0, 0.0
    for module, delta in factorable.items():
        d = delta.double()
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        k = min(r, s.numel())
        b = (u[:, :k] * s[:k]).float()
        a = vh[:k].float()
        if k < r:  # pad so every layer has the same rank (one LoRA config)
            b = torch.cat([b, b.new_zeros(b.shape[0], r - k)], dim=1)
            a = torch.cat([a, a.new_zeros(r - k, a.shape[1])], dim=0)
        state[f"{module}.lora_A.weight"] = a.contiguous()
        state[f"{module}.lora_B.weight"] = b.contiguous()
        residual += float(torch.linalg.matrix_norm(d - b.double() @ a.double()) ** 2)
        total += float(torch.linalg.matrix_norm(d) ** 2)
    error = (residual / total) ** 0.5 if total > 0 else 0.0
    return LoraFactors(state, r, error, dropped)


def _check_exportable(edit: Edit, unet: torch.nn.Module) -> None:
    """An Edit with at least one delta, every one naming a parameter of ``unet`` with its shape, all finite."""
    if not isinstance(edit, Edit):
        raise BadTypeError(f"expected an Edit, got {type(edit).__name__}")
    if not edit.deltas:
        raise UnlearnkitError(f"edit {edit.name!r} is empty: nothing to export")
    edit.check_against(unet)


def export_lora(edit: Edit, pipe, out_dir: str | Path, rank: int | None = None,
                drop_non_linear: bool = False) -> LoraFactors:
    """Write ``edit`` as a diffusers LoRA folder (``pipe.load_lora_weights(out_dir)`` applies it)."""
    factors = lora_factors(edit, pipe.unet, rank, drop_non_linear)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = sorted({key.rsplit(".lora_", 1)[0] for key in factors.state_dict})
    metadata = {"r": factors.rank, "lora_alpha": factors.rank, "target_modules": targets}
    type(pipe).save_lora_weights(str(out_dir), unet_lora_layers=factors.state_dict, weight_name=LORA_WEIGHT_NAME,
                                 safe_serialization=True, unet_lora_adapter_metadata=metadata)
    (out_dir / "unlearnkit_export.json").write_text(json.dumps(
        {"edit": edit.name, "format": "lora", "rank": factors.rank, "relative_error": factors.relative_error,
         "dropped": factors.dropped, "edit_metadata": edit.metadata}, indent=2, default=str))
    return factors


def export_diffusers(edit: Edit, pipe, out_dir: str | Path) -> Path:
    """Write the pipeline with ``edit`` applied as a diffusers folder; ``pipe`` itself is left unchanged."""
    _check_exportable(edit, pipe.unet)
    out_dir = Path(out_dir)
    with edit.applied(pipe.unet):
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
    (out_dir / "unlearnkit_export.json").write_text(json.dumps(
        {"edit": edit.name, "format": "diffusers", "edit_metadata": edit.metadata}, indent=2, default=str))
    return out_dir


def export_edit(edit: Edit, pipe, out_dir: str | Path, fmt: str, rank: int | None = None,
                drop_non_linear: bool = False):
    """Dispatch on ``fmt`` (one of :data:`FORMATS`)."""
    check_choice(fmt, "export format", FORMATS)
    if fmt == "diffusers":
        return export_diffusers(edit, pipe, out_dir)
    return export_lora(edit, pipe, out_dir, rank, drop_non_linear)
