"""Imagenette classifier accuracy — Sculpting Memory Tables 1, 2 and 9, SepME's object ACC.

:func:`classifier_accuracy` turns predicted and target labels into one table row: per-class accuracy, ``Total Acc``
(mean over the erased classes, SM Table 1) and ``Others Acc`` (mean over the kept classes, SM Tables 2 and 9).
Backends predict labels from images:

* :class:`ResNet50Classifier` — torchvision ResNet-50 from a local weights file (``.pth`` or ``.safetensors``),
  torchvision's weights transforms, top-1. A prediction counts for an Imagenette class by its ImageNet index
  (``match="exact_index"``, SepME) or when the class name is a substring of the predicted ImageNet label
  (``match="substring"``, as SM's release does);
* :class:`MiniObjectClassifier` — the mini world's object classifier (and its superclass head, for the rate at
  which an erased object is drawn as its superclass, SM §3 "superclass alignment").
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from unlearnkit.metrics import check_images, check_weights_file, mini_evaluators

__all__ = [
    "IMAGENETTE_CLASSES",
    "IMAGENETTE_IMAGENET_INDEX",
    "RESNET50_WEIGHT_URLS",
    "load_state_dict_file",
    "classifier_accuracy",
    "superclass_hit_rate",
    "ResNet50Classifier",
    "MiniObjectClassifier",
]

# ImageNet-1k indices of the ten Imagenette classes (SepME's evaluation script; SM Table 1's column order).
IMAGENETTE_IMAGENET_INDEX = {
    "tench": 0, "English springer": 217, "cassette player": 482, "chain saw": 491, "church": 497,
    "French horn": 566, "garbage truck": 569, "gas pump": 571, "golf ball": 574, "parachute": 701,
}
IMAGENETTE_CLASSES = tuple(IMAGENETTE_IMAGENET_INDEX)
RESNET50_WEIGHT_URLS = {
    "V1": "https://download.pytorch.org/models/resnet50-0676ba61.pth",  # torchvision IMAGENET1K_V1
    "V2": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",  # torchvision IMAGENET1K_V2 (= DEFAULT)
}
MATCH_RULES = ("exact_index", "substring")
TOTAL_ACC = "Total Acc"
OTHERS_ACC = "Others Acc"


def classifier_accuracy(predicted: Sequence, target: Sequence, erased: Sequence = (),
                        classes: Sequence | None = None) -> dict:
    """Per-class top-1 accuracy, ``Total Acc`` over ``erased`` and ``Others Acc`` over the other classes.

    ``predicted[i]`` and ``target[i]`` are the labels of image ``i`` (a hit is equality). Both summaries are means
    of per-class accuracies. ``classes`` fixes the column order (default: order of first appearance in
    ``target``); classes without images are left out.
    Returns ``{class: acc, …, "Total Acc": …, "Others Acc": …}`` (NaN where a group is empty).
    """
    predicted, target = list(predicted), list(target)
    if len(predicted) != len(target):
        raise ValueError(f"got {len(predicted)} predictions but {len(target)} targets")
    present = list(dict.fromkeys(target))
    order = [c for c in (classes if classes is not None else present) if c in present]
    unknown = [c for c in erased if c not in present]
    if unknown:
        raise ValueError(f"erased classes {unknown} have no images; targets hold {present}")
    hits = np.array([p == t for p, t in zip(predicted, target)], dtype=bool)
    target_array = np.array(target, dtype=object)
    per_class = {c: float(hits[target_array == c].mean()) for c in order}
    erased_set = set(erased)
    row = dict(per_class)
    row[TOTAL_ACC] = _mean_or_nan([a for c, a in per_class.items() if c in erased_set])
    row[OTHERS_ACC] = _mean_or_nan([a for c, a in per_class.items() if c not in erased_set])
    return row


def superclass_hit_rate(predicted_superclass: Sequence, target_superclass: Sequence) -> float:
    """Fraction of images classified as the expected superclass (an erased object drawn as its superclass)."""
    predicted_superclass, target_superclass = list(predicted_superclass), list(target_superclass)
    if len(predicted_superclass) != len(target_superclass) or not target_superclass:
        raise ValueError(f"need equally many, non-zero predictions and targets; got {len(predicted_superclass)} "
                         f"and {len(target_superclass)}")
    return float(np.mean([p == t for p, t in zip(predicted_superclass, target_superclass)]))


def _mean_or_nan(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def load_state_dict_file(path: Path, what: str = "a state dict") -> dict:
    """A state dict from a ``.safetensors`` file (checked) or any other file (``torch.load(weights_only=True)``).

    Neither path runs code from the file; a ``.safetensors`` file that is not one (e.g. a renamed pickle) and a file
    that needs a full unpickling raise :class:`~unlearnkit.core.errors.BadFileError` (a ``ValueError``).
    """
    from unlearnkit.core.files import load_state_dict_file as load

    return load(path, what)


def _underscore_lower(name: str) -> str:
    return name.lower().replace(" ", "_")


class ResNet50Classifier:
    """torchvision ResNet-50 on ImageNet, loaded from a local ``.pth`` or ``.safetensors`` state dict, predicting
    Imagenette labels.

    ``predict`` returns, per image, the Imagenette class the top-1 prediction counts for under ``match``, or the
    ImageNet category name of the top-1 index when it counts for none — so ``classifier_accuracy(predict(x),
    targets)`` is SepME's exact-index accuracy (``"exact_index"``) or SM's substring accuracy (``"substring"``,
    on underscore-joined names, case-insensitive).
    """

    def __init__(self, weights_path, version: str = "V1", match: str = "exact_index", device="cpu",
                 batch_size: int = 32):
        from unlearnkit.core.files import load_into
        from unlearnkit.core.validation import check_choice, check_device, check_integer

        check_choice(version, "version", tuple(RESNET50_WEIGHT_URLS))
        check_choice(match, "match", MATCH_RULES)
        check_integer(batch_size, "batch_size", minimum=1)
        check_device(device)
        path = check_weights_file(weights_path, f"ResNet-50 IMAGENET1K_{version}",
                                  f"torchvision's ResNet50_Weights.IMAGENET1K_{version} "
                                  f"({RESNET50_WEIGHT_URLS[version]})")
        from torchvision.models import ResNet50_Weights, resnet50

        weights_enum = getattr(ResNet50_Weights, f"IMAGENET1K_{version}")
        self.categories = tuple(weights_enum.meta["categories"])
        self.transform = weights_enum.transforms()  # resize, centre crop 224, ImageNet mean/std; no download
        self.device = torch.device(device)
        what = f"torchvision ResNet-50 IMAGENET1K_{version}"
        state = load_state_dict_file(path, what)   # read (and refused if bad) before the model is built
        self.model = resnet50(weights=None)
        load_into(self.model, state, path, what)  # copies (and casts) into the float32 model
        self.model.to(self.device).eval()
        self.match = match
        self.batch_size = batch_size

    @torch.no_grad()
    def top1_indices(self, images) -> np.ndarray:
        """``[N]`` ImageNet-1k index of the top-1 prediction."""
        images = check_images(images)
        tops = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(images[start:start + self.batch_size]).permute(0, 3, 1, 2)
            logits = self.model(self.transform(batch).to(self.device))
            tops.append(logits.argmax(-1).cpu())
        return torch.cat(tops).numpy()

    def label_of(self, index: int) -> str:
        """The Imagenette class that ImageNet index ``index`` counts for, else its ImageNet category name."""
        if self.match == "exact_index":
            for name, imagenet_index in IMAGENETTE_IMAGENET_INDEX.items():
                if imagenet_index == index:
                    return name
        else:
            predicted = _underscore_lower(self.categories[index])
            for name in IMAGENETTE_CLASSES:
                if _underscore_lower(name) in predicted:
                    return name
        return self.categories[index]

    def predict(self, images) -> list[str]:
        return [self.label_of(int(i)) for i in self.top1_indices(images)]


class MiniObjectClassifier:
    """The mini world's object classifier: top-1 object name (or ``"none"``) and top-1 superclass name."""

    NONE = "none"

    def __init__(self, world):
        self.evaluators = mini_evaluators(world)
        self.objects = tuple(self.evaluators.objects) + (self.NONE,)
        self.superclasses = tuple(self.evaluators.superclasses) + (self.NONE,)

    def predict(self, images) -> list[str]:
        top1 = self.evaluators.object_probs(check_images(images)).argmax(-1)
        return [self.objects[int(i)] for i in top1]

    def predict_superclass(self, images) -> list[str]:
        top1 = self.evaluators.superclass_probs(check_images(images)).argmax(-1)
        return [self.superclasses[int(i)] for i in top1]
