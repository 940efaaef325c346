"""CLIP score ``100·cos(image, prompt)`` — ANT Tables 1–3, SM Tables 1 and 3, MACE's metric scripts.

ANT and MACE report HF ``openai/clip-vit-base-patch32`` ``logits_per_image`` (= 100·cos, the logit scale of the
OpenAI weights); SM prints its raw cosine ×100. Both are ``scale=100``. For the 100-artist experiment ANT Table 3
reports ``CLIP_e`` (erased artists' prompts), ``CLIP_p`` (preserved artists' prompts) and ``H_a = CLIP_p − CLIP_e``.

Backends score one image against one prompt:

* :class:`OpenCLIPScorer` — open_clip ViT-B-32 with the OpenAI weights (QuickGELU) from a local file: either the
  OpenAI TorchScript archive ``ViT-B-32.pt`` or an open_clip state dict (``open_clip_pytorch_model.bin`` /
  ``open_clip_model.safetensors`` of ``timm/vit_base_patch32_clip_224.openai``);
* :class:`MiniCLIPScorer` — the mini world's contrastive model (:meth:`MiniWorld.clip_score`).
"""
from __future__ import annotations

import zipfile
from typing import Sequence

import numpy as np
import torch

from unlearnkit.metrics import check_images, check_weights_file, mean_and_std

__all__ = [
    "OPENAI_VIT_B_32_URL",
    "mean_clip_score",
    "erase_preserve_clip",
    "style_erasure_gap",
    "OpenCLIPScorer",
    "MiniCLIPScorer",
]

OPENAI_VIT_B_32_URL = ("https://openaipublic.azureedge.net/clip/models/"
                       "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt")
CLIP_SCALE = 100.0


def mean_clip_score(images, prompts: Sequence[str], scorer, column: str = "CLIP") -> dict:
    """Mean and std of the per-image CLIP score: ``{column: mean, f"{column} std": std, "N": n}``."""
    scores = scorer.score(images, prompts)
    mean, std = mean_and_std(scores)
    return {column: mean, f"{column} std": std, "N": int(len(scores))}


def style_erasure_gap(clip_erased: float, clip_preserved: float) -> float:
    """``H_a = CLIP_p − CLIP_e`` (ANT Table 3: MACE 28.58 − 22.59 = 5.99)."""
    return float(clip_preserved) - float(clip_erased)


def erase_preserve_clip(erased_scores, preserved_scores) -> dict:
    """ANT Table 3's row from per-image CLIP scores of the erased and the preserved group's prompts."""
    clip_e, _ = mean_and_std(erased_scores)
    clip_p, _ = mean_and_std(preserved_scores)
    return {"CLIP_e": clip_e, "CLIP_p": clip_p, "H_a": style_erasure_gap(clip_e, clip_p)}


def _check_pairs(images, prompts) -> tuple[np.ndarray, list[str]]:
    images, prompts = check_images(images), list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be strings")
    return images, prompts


def _is_torchscript_archive(path) -> bool:
    """OpenAI's released CLIP files are TorchScript archives (a zip holding ``constants.pkl`` and ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


class OpenCLIPScorer:
    """open_clip ViT-B-32 from a local file; ``score`` gives ``scale · cos(image, prompt)`` per pair.

    ``quick_gelu=True`` matches the OpenAI weights the papers use; set it to False for LAION-trained weights.
    Prompts longer than 77 tokens are truncated (MACE's script would fail on them instead).
    """

    def __init__(self, weights_path, model_name: str = "ViT-B-32", device="cpu", scale: float = CLIP_SCALE,
                 quick_gelu: bool = True, batch_size: int = 64):
        path = check_weights_file(weights_path, f"open_clip {model_name} (OpenAI)",
                                  f"open_clip's 'openai' {model_name} checkpoint ({OPENAI_VIT_B_32_URL}, or "
                                  f"open_clip_pytorch_model.bin of the hub model timm/vit_base_patch32_clip_224.openai)")
        import open_clip

        self.device = torch.device(device)
        if _is_torchscript_archive(path):
            model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
            self.preprocess = open_clip.image_transform(model.visual.image_size, is_train=False,
                                                        mean=model.visual.image_mean, std=model.visual.image_std)
        else:
            model, _, self.preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(path), force_quick_gelu=quick_gelu, device="cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.scale = scale
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, images, prompts: Sequence[str]) -> np.ndarray:
        from PIL import Image

        images, prompts = _check_pairs(images, prompts)
        scores = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(Image.fromarray(image))
                                  for image in images[start:start + self.batch_size]])
            tokens = self.tokenizer(prompts[start:start + self.batch_size])
            image_embeds = self.model.encode_image(pixels.to(self.device), normalize=True)
            text_embeds = self.model.encode_text(tokens.to(self.device), normalize=True)
            scores.append((self.scale * (image_embeds * text_embeds).sum(-1)).float().cpu())
        return torch.cat(scores).numpy()


class MiniCLIPScorer:
    """The mini world's CLIP score (its small contrastive model), on the same ``scale · cos`` footing."""

    def __init__(self, world, scale: float = CLIP_SCALE):
        from unlearnkit.worlds.mini import MiniWorld

        if not isinstance(world, MiniWorld):
            raise TypeError(f"MiniCLIPScorer needs a MiniWorld (its tokenizer and CLIP), got {type(world).__name__}")
        self.world = world
        self.scale = scale

    def score(self, images, prompts: Sequence[str]) -> np.ndarray:
        images, prompts = _check_pairs(images, prompts)
        return self.world.clip_score(images, prompts) * (self.scale / CLIP_SCALE)
