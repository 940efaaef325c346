"""CLIP score ``100·cos(image, prompt)`` — ANT Tables 1–3, SM Tables 1 and 3.

The papers report CLIP ViT-B/32 (OpenAI weights) at ``scale=100``. For the 100-artist experiment ANT Table 3
reports ``CLIP_e`` (erased artists' prompts), ``CLIP_p`` (preserved artists' prompts) and ``H_a = CLIP_p − CLIP_e``.

Backends score one image against one prompt:

* :class:`OpenCLIPScorer` — open_clip ViT-B-32 with the OpenAI weights (QuickGELU) from a local file: an open_clip
  state dict (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin`` of
  ``timm/vit_base_patch32_clip_224.openai``, read without unpickling), or — only when declared with
  ``weights_format="torchscript"`` — OpenAI's TorchScript archive ``ViT-B-32.pt`` (``torch.jit.load``, never a
  pickle fallback); or any open_clip model given by its JSON config (``model_config``; the smoke world's tiny CLIP);
* :class:`MiniCLIPScorer` — the mini world's contrastive model (:meth:`MiniWorld.clip_score`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from unlearnkit.core.errors import BadFileError
from unlearnkit.core.files import file_kind, load_into, load_state_dict_file
from unlearnkit.core.validation import check_choice, check_device, check_flag, check_integer, check_number
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
#: how :class:`OpenCLIPScorer` reads its weights file: a state dict (safetensors or weights-only torch file), or
#: OpenAI's TorchScript archive — read only when the caller says the file is one
WEIGHT_FORMATS = ("state_dict", "torchscript")


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


def _open_clip_state_dict(path, what: str) -> dict:
    """An open_clip state dict from ``.safetensors`` or a weights-only ``torch.load`` (never a full unpickling)."""
    if path.suffix != ".safetensors" and file_kind(path) == "torchscript":
        raise BadFileError(path, f"is a TorchScript archive (OpenAI's ViT-B-32.pt?), not a state dict; TorchScript is "
                                 f"read only when declared: pass weights_format='torchscript' (reproduce: "
                                 f"--evaluator open_clip_format=torchscript), or use {what} as .safetensors")
    state = load_state_dict_file(path, what)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if state and next(iter(state)).startswith("module."):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _openai_torchscript_model(path: Path, quick_gelu: bool):
    """open_clip's model built from the state dict inside OpenAI's TorchScript archive (``torch.jit.load`` only)."""
    import warnings

    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import build_model_from_openai_state_dict

    try:
        with warnings.catch_warnings():   # torch.jit is deprecated; OpenAI's released file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except (RuntimeError, ValueError, OSError) as error:
        raise BadFileError(path, f"is not a TorchScript archive ({str(error).strip().splitlines()[0][:200]}); "
                                 f"expected OpenAI's CLIP ViT-B-32.pt") from None
    try:
        model = build_model_from_openai_state_dict(state, quick_gelu=quick_gelu, cast_dtype=None)
    except (KeyError, RuntimeError, ValueError, IndexError) as error:
        raise BadFileError(path, f"does not hold OpenAI CLIP weights ({type(error).__name__}: {error})") from None
    model.float()
    model.visual.image_mean, model.visual.image_std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    return model


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class OpenCLIPScorer:
    """open_clip ViT-B-32 from a local file; ``score`` gives ``scale · cos(image, prompt)`` per pair.

    ``weights_path`` is an open_clip state dict (``.safetensors``, or ``.bin``/``.pth`` read weights-only), or with
    ``weights_format="torchscript"`` OpenAI's TorchScript ``ViT-B-32.pt``. ``model_config`` is an open_clip JSON
    model config to use instead of ``model_name`` (registered with ``open_clip.add_model_config``; the model name is
    its file stem).
    ``quick_gelu=True`` matches the OpenAI weights the papers use; set it to False for LAION-trained weights.
    Prompts longer than 77 tokens are truncated.
    """

    def __init__(self, weights_path, model_name: str = "ViT-B-32", device="cpu", scale: float = CLIP_SCALE,
                 quick_gelu: bool = True, batch_size: int = 64, model_config: str | os.PathLike | None = None,
                 weights_format: str = "state_dict"):
        what = f"open_clip {model_name} (OpenAI)"
        path = check_weights_file(weights_path, what,
                                  f"open_clip's 'openai' {model_name} checkpoint ({OPENAI_VIT_B_32_URL}, or "
                                  f"open_clip_model.safetensors of the hub model "
                                  f"timm/vit_base_patch32_clip_224.openai)")
        check_choice(weights_format, "weights_format", WEIGHT_FORMATS)
        check_number(scale, "scale", positive=True)
        check_integer(batch_size, "batch_size", minimum=1)
        check_flag(quick_gelu, "quick_gelu")
        check_device(device)
        import open_clip

        if model_config is not None:
            config_path = Path(model_config).expanduser()
            if not config_path.is_file():
                raise FileNotFoundError(f"open_clip model config {str(config_path)!r} not found (a JSON file such "
                                        f"as open_clip's model_configs/ViT-B-32.json)")
            open_clip.add_model_config(config_path)
            model_name = config_path.stem
        self.device = torch.device(device)
        if weights_format == "torchscript":
            model = _openai_torchscript_model(path, quick_gelu)
            self.preprocess = open_clip.image_transform(model.visual.image_size, is_train=False,
                                                        mean=model.visual.image_mean, std=model.visual.image_std)
        else:
            state = _open_clip_state_dict(path, what)   # read (and refused if bad) before any model is built
            quiet = _DropMessage("No pretrained weights loaded")  # they are loaded just below
            logging.getLogger().addFilter(quiet)
            try:
                model, _, self.preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=None, force_quick_gelu=quick_gelu, device="cpu")
            finally:
                logging.getLogger().removeFilter(quiet)
            load_into(model, state, path, what)
        self.model = model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.scale = scale
        self.batch_size = batch_size

    @torch.no_grad()
    def image_features(self, images) -> np.ndarray:
        """``[N, D]`` L2-normalised image embeddings of uint8 ``[N, H, W, 3]`` images."""
        from PIL import Image

        images = check_images(images)
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(Image.fromarray(image))
                                  for image in images[start:start + self.batch_size]])
            out.append(self.model.encode_image(pixels.to(self.device), normalize=True).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self._embed_dim()), np.float32)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """``[N, D]`` L2-normalised text embeddings (prompts truncated to 77 tokens)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        out = [self.model.encode_text(self.tokenizer(texts[start:start + self.batch_size]).to(self.device),
                                      normalize=True).float().cpu()
               for start in range(0, len(texts), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self._embed_dim()), np.float32)

    def _embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])

    def score(self, images, prompts: Sequence[str]) -> np.ndarray:
        """``[N]`` ``scale · cos(image_i, prompt_i)``."""
        images, prompts = _check_pairs(images, prompts)
        cosine = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        return (self.scale * cosine).astype(np.float32)


class MiniCLIPScorer:
    """The mini world's CLIP score (its small contrastive model), on the same ``scale · cos`` footing."""

    def __init__(self, world, scale: float = CLIP_SCALE):
        check_number(scale, "scale", positive=True)
        if not callable(getattr(world, "clip_score", None)):
            raise TypeError(f"MiniCLIPScorer needs a world with clip_score(images, prompts) (the mini world), got "
                            f"{type(world).__name__}")
        self.world = world
        self.scale = scale

    def score(self, images, prompts: Sequence[str]) -> np.ndarray:
        images, prompts = _check_pairs(images, prompts)
        return self.world.clip_score(images, prompts) * (self.scale / CLIP_SCALE)
