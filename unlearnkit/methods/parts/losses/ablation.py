"""Anchor-mapping objectives: the concept's noise prediction is pulled onto another concept's.

* **AC, model-based concept ablation** (Kumari et al., "Ablating Concepts in Text-to-Image Diffusion Models",
  ICCV 2023, §3 "model-based"): with ``x_t`` noised from images of the anchor concept ``c*``,

      L_AC = ‖ε_θ(x_t, c, t) − sg[ε*(x_t, c*, t)]‖²          (time weight w_t = 1)

  where ε* is the frozen pretrained model.
* **SalUn for diffusion** (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency",
  ICLR 2024, §4 random labelling for generation): with ``x_t`` noised from images of the forgotten concept ``c``
  and a *different* concept ``c′``, plus the ordinary denoising loss on retained data ``D_r``,

      L_SalUn = ‖ε_θ(x_t, c, t) − sg[ε_θ(x_t, c′, t)]‖² + α ‖ε_θ(x_r,t, c_r, t) − ε‖²

  Both predictions come from the model being trained (θ on both sides in SalUn's objective); the pseudo-label side
  carries no gradient (the release detaches it), so the concept moves towards c′, not the
  other way round. α is the release's ``--alpha``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["anchor_mapping_loss", "salun_loss_terms"]


def _same_shape(**tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shape mismatch: {shapes}")


def anchor_mapping_loss(eps_concept: torch.Tensor, eps_anchor: torch.Tensor) -> torch.Tensor:
    """``‖ε_θ(x_t, c) − sg[ε(x_t, c*)]‖²`` (mean over elements): AC's model-based loss, SalUn's forgetting term.

    Args:
        eps_concept: ``[B, C, h, w]`` prediction for the concept's prompt, with gradient.
        eps_anchor: ``[B, C, h, w]`` prediction for the anchor / pseudo-label prompt at the same ``(x_t, t)``;
            detached here.
    """
    _same_shape(eps_concept=eps_concept, eps_anchor=eps_anchor)
    return F.mse_loss(eps_concept, eps_anchor.detach())


def salun_loss_terms(eps_forget: torch.Tensor, eps_pseudo: torch.Tensor, eps_retain: torch.Tensor,
                     noise_retain: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """SalUn's two terms and their sum (key ``"loss"``): ``forget = ‖ε_θ(x_t|c) − sg[ε_θ(x_t|c′)]‖²`` and
    ``retain = α‖ε_θ(x_r|c_r) − ε_r‖²`` (the standard denoising loss on retained data)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    _same_shape(eps_retain=eps_retain, noise_retain=noise_retain)
    terms = {"forget": anchor_mapping_loss(eps_forget, eps_pseudo),
             "retain": alpha * F.mse_loss(eps_retain, noise_retain)}
    terms["loss"] = terms["forget"] + terms["retain"]
    return terms
