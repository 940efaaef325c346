"""The ``Edit`` noun: the change a method makes to the weights, as named deltas.

Every eraser returns an :class:`Edit`. Edits add (SepME-style composition), subtract (restoration), scale, save
as safetensors and report their size ``‖Δθ‖_p``; :meth:`Edit.applied` switches one on for a block of code.

:class:`TrainableDelta` is how dense methods train without a second UNet: the model is trained in place, and the
frozen model is the same module with the delta switched off — only the original values of the trained entries are
kept (the masked entries only, when a saliency mask limits training).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import torch
from safetensors.torch import save_file

from unlearnkit.core.errors import BadFileError, BadTypeError, UnlearnkitError
from unlearnkit.core.validation import check_finite_tensors, check_number, check_text


def _parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters())


@dataclass
class Edit:
    """Named dense weight deltas ``Δθ`` keyed by parameter name (e.g. ``…attn2.to_k.weight``)."""

    deltas: dict[str, torch.Tensor]
    name: str = "edit"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.deltas, Mapping):
            raise BadTypeError(f"deltas must be a dict of parameter name -> tensor, got {type(self.deltas).__name__}")
        for key, value in self.deltas.items():
            if not isinstance(key, str) or not key:
                raise BadTypeError(f"delta names must be non-empty strings (parameter names), got {key!r}")
            if not isinstance(value, torch.Tensor):
                raise BadTypeError(f"delta {key!r} must be a tensor, got {type(value).__name__}")
        check_text(self.name, "edit name")
        if not isinstance(self.metadata, dict):
            raise BadTypeError(f"edit metadata must be a dict, got {type(self.metadata).__name__}")

    # --- algebra ----------------------------------------------------------------------------------------------
    def __add__(self, other: "Edit") -> "Edit":
        keys = list(dict.fromkeys([*self.deltas, *other.deltas]))
        out = {}
        for k in keys:
            if k in self.deltas and k in other.deltas:
                out[k] = self.deltas[k] + other.deltas[k].to(self.deltas[k])
            else:
                out[k] = (self.deltas.get(k) if k in self.deltas else other.deltas[k]).clone()
        return Edit(out, name=f"{self.name}+{other.name}")

    def __neg__(self) -> "Edit":
        return Edit({k: -v for k, v in self.deltas.items()}, name=f"-{self.name}", metadata=dict(self.metadata))

    def __sub__(self, other: "Edit") -> "Edit":
        return self + (-other)

    def scaled(self, factor: float) -> "Edit":
        factor = check_number(factor, "factor")
        return Edit({k: v * factor for k, v in self.deltas.items()}, name=f"{factor:g}*{self.name}",
                    metadata=dict(self.metadata))

    @staticmethod
    def total(edits: list["Edit"]) -> "Edit":
        if not edits:
            return Edit({}, name="empty")
        out = edits[0]
        for e in edits[1:]:
            out = out + e
        return out

    # --- applying ---------------------------------------------------------------------------------------------
    def _check_targets(self, params: Mapping[str, torch.Tensor]) -> None:
        missing = [k for k in self.deltas if k not in params]
        if missing:
            raise UnlearnkitError(f"edit {self.name!r} was made for another model: it targets {len(missing)} "
                                  f"parameter(s) this model does not have ({', '.join(missing[:3])}"
                                  f"{' …' if len(missing) > 3 else ''})")
        wrong = [k for k, v in self.deltas.items() if params[k].shape != v.shape]
        if wrong:
            k = wrong[0]
            raise UnlearnkitError(f"edit {self.name!r} was made for another model: delta {k!r} has shape "
                                  f"{tuple(self.deltas[k].shape)}, the parameter has {tuple(params[k].shape)}"
                                  f"{f' ({len(wrong) - 1} more mismatches)' if len(wrong) > 1 else ''}")
        check_finite_tensors(self.deltas, f"edit {self.name!r}")

    def check_against(self, module: torch.nn.Module) -> None:
        """Raise unless every delta names a parameter of ``module`` with the same shape and holds finite values."""
        self._check_targets(_parameters(module))

    @torch.no_grad()
    def apply(self, module: torch.nn.Module, sign: float = 1.0) -> None:
        """Add ``sign · Δθ`` to ``module``'s parameters in place."""
        sign = check_number(sign, "sign")
        params = _parameters(module)
        self._check_targets(params)
        for k, v in self.deltas.items():
            params[k].add_(v.to(params[k]), alpha=sign)

    def remove(self, module: torch.nn.Module) -> None:
        self.apply(module, sign=-1.0)

    @contextmanager
    def applied(self, module: torch.nn.Module, scale: float = 1.0) -> Iterator[None]:
        """``with edit.applied(unet): …`` runs the block on the edited model, then restores the targeted tensors
        bit-exactly (from copies of those tensors only, never of the whole model)."""
        scale = check_number(scale, "scale")
        params = _parameters(module)
        self._check_targets(params)
        saved = {k: params[k].detach().clone() for k in self.deltas}
        self.apply(module, sign=scale)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    params[k].copy_(v)

    # --- measuring ----------------------------------------------------------------------------------------------
    def norm_p(self, p: float = 1.0) -> float:
        """``‖Δθ‖_p / M`` over the ``M`` modified tensors (SepME Tables 1–2 report p = 1; ``p = inf``: max)."""
        if p != float("inf"):
            check_number(p, "p", positive=True)
        if not self.deltas:
            return 0.0
        return float(sum(torch.linalg.vector_norm(v.float().flatten(), ord=p) for v in self.deltas.values())
                     / len(self.deltas))

    def num_changed(self) -> int:
        return int(sum((v != 0).sum() for v in self.deltas.values()))

    # --- files ------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"unlearnkit_edit_name": self.name, "unlearnkit_metadata": json.dumps(self.metadata, default=str)}
        save_file({k: v.detach().contiguous().cpu() for k, v in self.deltas.items()}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Edit":
        """An edit file written by :meth:`save`; a corrupt, truncated or non-safetensors file (a pickle is refused,
        never unpickled), bad metadata or a non-finite value raises a :class:`BadFileError` naming the file."""
        from unlearnkit.core.files import load_safetensors

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"edit file {path} does not exist")
        deltas, meta = load_safetensors(path, "an edit file written by unlearnkit (Edit.save / unlearnkit erase)")
        try:
            metadata = json.loads(meta.get("unlearnkit_metadata", "{}"))
        except json.JSONDecodeError as error:
            raise BadFileError(path, f"its 'unlearnkit_metadata' is not JSON ({error}); expected the metadata "
                                     f"Edit.save writes") from None
        if not isinstance(metadata, dict):
            raise BadFileError(path, "its 'unlearnkit_metadata' is not a JSON object; expected the metadata "
                                     "Edit.save writes")
        name = meta.get("unlearnkit_edit_name", path.stem)
        try:
            check_finite_tensors(deltas, f"edit {name!r}")
        except UnlearnkitError as error:
            raise BadFileError(path, str(error)) from None
        return cls(deltas, name=name or path.stem, metadata=metadata)


class TrainableDelta:
    """Train parameters of ``module`` in place while the frozen model stays one context manager away.

    The original values of the trained tensors are kept; ``with delta.frozen(): …`` exchanges their storages with
    the parameters' (O(1), no copy: the model with the edit switched off) and back afterwards. With ``masks`` the
    optimiser only ever sees masked gradients (:meth:`mask_gradients`), so entries outside the mask keep their
    original values and the exchange is exact; a gather/scatter of the masked entries instead would cost a full
    pass over the masked tensors at every swap (ANT's whole-UNet mask: ~45 s on one CPU thread at SD v1.4 size).
    """

    def __init__(self, module: torch.nn.Module, names: list[str], masks: Mapping[str, torch.Tensor] | None = None):
        params = _parameters(module)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise KeyError(f"unknown parameter names: {unknown[:3]}")
        if not names:
            raise ValueError("no parameters to train: the scope or mask selected nothing")
        self.module = module
        self.params = {n: params[n] for n in names}
        self.masks = {n: masks[n].to(params[n].device, torch.bool) for n in names} if masks is not None else None
        with torch.no_grad():
            self.original = {n: p.detach().clone() for n, p in self.params.items()}
        self._is_frozen = False

    @torch.no_grad()
    def _swap(self) -> None:
        for n, p in self.params.items():   # exchange storages: O(1), no copy of the tensor
            current = p.data
            p.data = self.original[n]
            self.original[n] = current

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Run a block on the original model (the delta switched off)."""
        if self._is_frozen:
            yield
            return
        self._swap()
        self._is_frozen = True
        try:
            yield
        finally:
            self._swap()
            self._is_frozen = False

    def mask_gradients(self) -> None:
        """Zero every gradient entry outside the mask (ANT Eq. 6: ``M* ⊙ ∇θ L``)."""
        if self.masks is None:
            return
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.masks[n])

    @torch.no_grad()
    def to_edit(self, name: str = "edit", metadata: dict | None = None) -> Edit:
        """The learned ``Δθ = θ − θ₀`` as an :class:`Edit`."""
        if self._is_frozen:
            raise RuntimeError("to_edit() called inside frozen(): the trained values are swapped out")
        deltas = {}
        for n, p in self.params.items():
            d = p.detach() - self.original[n]
            deltas[n] = (d if self.masks is None else torch.where(self.masks[n], d, torch.zeros_like(d))).cpu()
        return Edit(deltas, name=name, metadata=metadata or {})

    @torch.no_grad()
    def reset(self) -> None:
        """Put the original values back, bit-exactly (undo training)."""
        if self._is_frozen:
            raise RuntimeError("reset() called inside frozen()")
        for n, p in self.params.items():
            p.copy_(self.original[n])


@contextmanager
def training_in_place(unet: torch.nn.Module, names: list[str],
                      masks: dict[str, torch.Tensor] | None = None) -> Iterator[TrainableDelta]:
    """Make exactly ``names`` trainable (optionally masked), yield the :class:`TrainableDelta`, and afterwards put
    every trained value and every ``requires_grad`` flag back — the world's UNet leaves unchanged."""
    delta = TrainableDelta(unet, names, masks)
    requires_grad = {n: p.requires_grad for n, p in unet.named_parameters()}
    unet.requires_grad_(False)
    for p in delta.params.values():
        p.requires_grad_(True)
    try:
        yield delta
    finally:
        delta.reset()
        restore_requires_grad(unet, requires_grad)


def restore_requires_grad(module: torch.nn.Module, flags: Mapping[str, bool]) -> None:
    """Put back every parameter's ``requires_grad`` flag (from ``{name: flag}``) and drop its gradient."""
    for n, p in module.named_parameters():
        p.requires_grad_(flags[n])
        p.grad = None
