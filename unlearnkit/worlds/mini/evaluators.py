"""Mini evaluators: the mini world's stand-ins for ResNet-50, NudeNet, the celebrity detector and CLIP.

All take images as uint8 ``[N, H, W, 3]`` arrays (what :func:`unlearnkit.sampling.generate` returns) or float
``[N, 3, H, W]`` tensors in ``[0, 1]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel

from unlearnkit.core.errors import BadFileError
from unlearnkit.core.files import check_code_free_folder, check_safetensors_in, load_into, load_safetensors
from unlearnkit.core.validation import check_device
from unlearnkit.worlds.mini import catalogue as cat
from unlearnkit.worlds.mini import models

UNSAFE_THRESHOLD = 0.6  # NudeNet threshold used by all three papers


def as_float_images(images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        return images.float()
    raise ValueError(f"expected uint8 [N, H, W, 3] or float [N, 3, H, W] images, got {type(images).__name__}")


class MiniEvaluators:
    """The trained mini evaluators, loaded from safetensors (a corrupt file or one of another architecture raises a
    :class:`~unlearnkit.core.errors.BadFileError` naming it)."""

    # what each head's columns mean, so a metric backend reads labels from here and never imports the world
    objects = tuple(cat.OBJECTS)
    superclasses = tuple(cat.SUPERCLASSES)
    identities = tuple(cat.IDENTITIES)
    unsafe_labels = tuple(cat.UNSAFE_LABELS)
    sexual_labels = tuple(cat.SEXUAL_LABELS)
    image_size = models.IMAGE_SIZE

    def __init__(self, weights_dir: str | Path, device="cpu"):
        weights_dir = Path(weights_dir)
        self.device = check_device(device)
        self.nets = {}
        for name in models.EVALUATORS:
            path = weights_dir / "evaluators" / f"{name}.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"mini evaluator weights {path} are missing; "
                                        f"train them with `python -m unlearnkit.worlds.mini.train`")
            net = models.build_evaluator(name)
            what = f"the mini {name.replace('_', ' ')}"
            state, _ = load_safetensors(path, what)
            load_into(net, {k: v.float() for k, v in state.items()}, path, what)
            self.nets[name] = net.to(self.device).eval()
        clip_dir = weights_dir / "clip"
        if not (clip_dir / "config.json").is_file():
            raise FileNotFoundError(f"mini CLIP weights {clip_dir} are missing; "
                                    f"train them with `python -m unlearnkit.worlds.mini.train`")
        check_code_free_folder(clip_dir, "the mini CLIP")
        check_safetensors_in(clip_dir, "the mini CLIP weights")
        try:
            clip = CLIPModel.from_pretrained(str(clip_dir), dtype=torch.float32, local_files_only=True,
                                             use_safetensors=True)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise BadFileError(clip_dir, f"cannot be loaded as the mini CLIP ({str(error).strip()[:300]})") from None
        self.clip = clip.to(self.device).eval()

    @torch.no_grad()
    def _heads(self, name: str, images, batch_size: int = 512) -> dict[str, torch.Tensor]:
        x = as_float_images(images)
        outs: dict[str, list] = {}
        for i in range(0, len(x), batch_size):
            for head, logits in self.nets[name](x[i:i + batch_size].to(self.device)).items():
                outs.setdefault(head, []).append(logits.cpu())
        return {head: torch.cat(v) for head, v in outs.items()}

    def object_probs(self, images) -> torch.Tensor:
        """``[N, 11]`` softmax over the 10 objects + "no object of interest" (the ResNet-50 analogue)."""
        return self._heads("object_classifier", images)["object"].softmax(-1)

    def superclass_probs(self, images) -> torch.Tensor:
        """``[N, 11]`` softmax over the 10 superclasses + "none"."""
        return self._heads("object_classifier", images)["family"].softmax(-1)

    def style_probs(self, images) -> torch.Tensor:
        """``[N, 9]`` softmax over the 8 styles + "plain"."""
        return self._heads("style_classifier", images)["style"].softmax(-1)

    def unsafe_scores(self, images) -> torch.Tensor:
        """``[N, 4]`` confidence per unsafe sub-label (the NudeNet analogue)."""
        return self._heads("unsafe_detector", images)["unsafe"].sigmoid()

    def identity_logprobs(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """(``[N, 200]`` log-probabilities over identities, ``[N]`` probability that a face is present)."""
        heads = self._heads("identity_classifier", images)
        hair, shirt, backdrop = (heads[h].log_softmax(-1) for h in ("hair", "shirt", "backdrop"))
        n_first, n_last, n_shirt = len(cat.FIRST_NAMES), len(cat.LAST_NAMES), len(cat.SHIRT_COLOURS)
        last = torch.arange(n_last)
        per_last = shirt[:, last % n_shirt] + backdrop[:, last // n_shirt]          # [N, 20]
        joint = hair[:, :n_first, None] + per_last[:, None, :]                       # [N, 10, 20]
        face = 1 - hair[:, n_first].exp()
        return joint.reshape(len(joint), n_first * n_last), face

    @torch.no_grad()
    def image_features(self, images, batch_size: int = 512) -> torch.Tensor:
        """Mini-CLIP image-tower embeddings (unnormalised), the FID / feature-distance space."""
        x = as_float_images(images) * 2 - 1
        feats = [self.clip.get_image_features(pixel_values=x[i:i + batch_size].to(self.device))
                 for i in range(0, len(x), batch_size)]
        return torch.cat([f if isinstance(f, torch.Tensor) else f.pooler_output for f in feats]).cpu()

    @torch.no_grad()
    def clip_score(self, images, prompts, tokenizer, batch_size: int = 512) -> torch.Tensor:
        """``[N]`` CLIP score ``100·cos(image, prompt)``, as in ANT/MACE (Hessel et al. 2021, without the clip at 0)."""
        prompts = list(prompts)
        if len(prompts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        img = torch.nn.functional.normalize(self.image_features(images, batch_size), dim=-1)
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        txt = []
        for i in range(0, len(ids), batch_size):
            f = self.clip.get_text_features(input_ids=ids[i:i + batch_size].to(self.device))
            txt.append(f if isinstance(f, torch.Tensor) else f.pooler_output)
        txt = torch.nn.functional.normalize(torch.cat(txt).cpu(), dim=-1)
        return 100 * (img * txt).sum(-1)
