"""LPIPS between edited-model and original-model images of the same prompt and seed — SepME Tables 1–8.

SepME measures how far an erasure moves images it should not touch: LPIPS (AlexNet, v0.1) between the image the
original model and the edited model make from the same prompt and seed, after resizing both to 64 px.

LPIPS (Zhang et al. 2018) of images ``x, y``: for each layer ``l``, unit-normalise the features across channels
at every position, take the squared difference, weight channels by ``w_l``, average over positions and sum over
layers: ``d(x, y) = Σ_l mean_hw ‖w_l ⊙ (f̂_l(x) − f̂_l(y))‖²``.

* :class:`AlexNetLPIPS` — ``lpips.LPIPS(net="alex")``; its linear heads ``w_l`` ship in the lpips wheel, its AlexNet
  backbone is loaded from a local torchvision state dict (``.pth`` or ``.safetensors``; only the ``features.*``
  tensors are read, so a file holding just those is enough); the download lpips would trigger is switched off;
* :class:`MiniLPIPS` — the same formula with uniform weights ``w_l = 1`` on the three conv blocks of the mini
  world's object classifier.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import numpy as np
import torch
import torch.nn.functional as F

from unlearnkit.metrics import check_images, check_weights_file, mean_and_std, mini_evaluators
from unlearnkit.metrics.classification import load_state_dict_file

__all__ = ["ALEXNET_URL", "SEPME_RESIZE", "mean_lpips", "AlexNetLPIPS", "MiniLPIPS"]

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"  # torchvision AlexNet IMAGENET1K_V1
SEPME_RESIZE = 64


def mean_lpips(edited, original, backend) -> dict:
    """Mean and std of LPIPS over pairs (``edited[i]``, ``original[i]``): ``{"LPIPS", "LPIPS std", "N"}``."""
    distances = backend.distances(edited, original)
    mean, std = mean_and_std(distances)
    return {"LPIPS": mean, "LPIPS std": std, "N": int(len(distances))}


def _image_pairs(images_a, images_b, resize_to: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets as float ``[N, 3, H, W]`` in ``[0, 1]``, optionally resized (bilinear, antialiased)."""
    images_a, images_b = check_images(images_a), check_images(images_b)
    if images_a.shape != images_b.shape:
        raise ValueError(f"LPIPS compares image pairs; shapes differ: {images_a.shape} vs {images_b.shape}")
    pair = [torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 for x in (images_a, images_b)]
    if resize_to is not None:
        pair = [F.interpolate(x, size=(resize_to, resize_to), mode="bilinear", antialias=True, align_corners=False)
                for x in pair]
    return pair[0], pair[1]


def _load_alexnet_features(net: torch.nn.Module, alexnet_state: dict, path=None) -> None:
    """Copy torchvision AlexNet ``features.{i}.*`` tensors into lpips' slices (which keep the indices ``i``)."""
    from unlearnkit.core.files import load_into

    slice_of_layer = {name.split(".")[1]: name.split(".")[0] for name in net.state_dict()}
    state = {}
    for key, value in alexnet_state.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[1] in slice_of_layer:
            state[f"{slice_of_layer[parts[1]]}.{parts[1]}.{parts[2]}"] = value
    load_into(net, state, path or "the AlexNet state dict",
              "torchvision AlexNet IMAGENET1K_V1 (its features.* tensors)")


class AlexNetLPIPS:
    """``lpips.LPIPS(net="alex", version="0.1")`` with the AlexNet backbone from a local torchvision state dict
    (``.pth`` or ``.safetensors``; the ``features.*`` tensors are all it needs)."""

    def __init__(self, alexnet_weights_path, resize_to: int | None = SEPME_RESIZE, device="cpu",
                 batch_size: int = 32):
        from unlearnkit.core.validation import check_device, check_integer

        path = check_weights_file(alexnet_weights_path, "torchvision AlexNet IMAGENET1K_V1",
                                  f"torchvision's AlexNet_Weights.IMAGENET1K_V1 ({ALEXNET_URL})")
        check_integer(resize_to, "resize_to", minimum=1, allow_none=True)
        check_integer(batch_size, "batch_size", minimum=1)
        check_device(device)
        # pnet_rand=True builds AlexNet without weights (no download); the lpips linear heads are read here from
        # the wheel, weights-only (lpips' own loader leaves torch.load's unpickling mode to torch's default).
        from unlearnkit.core.files import load_weights_only

        with warnings.catch_warnings():  # lpips still passes torchvision's deprecated ``pretrained=False``
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
        heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        self.model.load_state_dict(load_weights_only(heads, "lpips' AlexNet linear heads (v0.1)"), strict=False)
        _load_alexnet_features(self.model.net, load_state_dict_file(path, "torchvision AlexNet IMAGENET1K_V1"), path)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.resize_to = resize_to
        self.batch_size = batch_size

    @torch.no_grad()
    def distances(self, images_a, images_b) -> np.ndarray:
        a, b = _image_pairs(images_a, images_b, self.resize_to)
        out = [self.model(a[i:i + self.batch_size].to(self.device), b[i:i + self.batch_size].to(self.device),
                          normalize=True).flatten().cpu() for i in range(0, len(a), self.batch_size)]
        return torch.cat(out).numpy()


class MiniLPIPS:
    """LPIPS with uniform layer weights on the feature maps of the mini object classifier's three conv blocks."""

    BLOCKS = (0, 2, 4)  # positions of the conv blocks in SmallConvNet.features (pools in between)

    def __init__(self, world, resize_to: int | None = None, batch_size: int = 256):
        from unlearnkit.core.validation import check_integer

        check_integer(resize_to, "resize_to", minimum=1, allow_none=True)
        check_integer(batch_size, "batch_size", minimum=1)
        self.features = mini_evaluators(world).nets["object_classifier"].features
        self.resize_to = resize_to
        self.batch_size = batch_size

    def _feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps, h = [], images * 2 - 1  # the classifier's own input scaling
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in self.BLOCKS:
                maps.append(h)
            if index == self.BLOCKS[-1]:
                return maps
        return maps

    @torch.no_grad()
    def distances(self, images_a, images_b) -> np.ndarray:
        a, b = _image_pairs(images_a, images_b, self.resize_to)
        device = next(self.features.parameters()).device
        out = []
        for start in range(0, len(a), self.batch_size):
            maps_a = self._feature_maps(a[start:start + self.batch_size].to(device))
            maps_b = self._feature_maps(b[start:start + self.batch_size].to(device))
            total = sum(lpips.spatial_average(((lpips.normalize_tensor(fa) - lpips.normalize_tensor(fb)) ** 2)
                                              .sum(dim=1, keepdim=True))
                        for fa, fb in zip(maps_a, maps_b))
            out.append(total.flatten().cpu())
        return torch.cat(out).numpy()
