"""Celebrity erasure metrics — ANT Table 2 and Table 4 (MACE's protocol).

Portraits of the 100 erased and the 100 preserved celebrities are identified by a recogniser; ``Acc_e`` and
``Acc_p`` are the top-1 accuracies on each group (images whose top-1 name equals the prompted name / images in
which a face was found), ``Face Ratio`` the share of images with a recognisable face, and

    H_c = 2 / ((1 − Acc_e)⁻¹ + Acc_p⁻¹)

the harmonic mean of erasure and preservation (ANT Eq. (8) omits the 2; its Table 2 values include it).

A recogniser is any callable ``identify(images) -> (names, face_found)``:

* :class:`MiniIdentityRecogniser` — the mini identity classifier; a face is found when its face probability ≥ 0.5;
* :class:`PluggableIdentityRecogniser` — for the paper world: the papers' GIPHY Celebrity Detector is not
  bundled, so the user plugs in a callable.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from unlearnkit.metrics import check_images, mini_evaluators

__all__ = [
    "FACE_THRESHOLD",
    "celebrity_harmonic_mean",
    "top1_accuracy",
    "identity_metrics",
    "MiniIdentityRecogniser",
    "PluggableIdentityRecogniser",
]

FACE_THRESHOLD = 0.5
ACCURACY_DENOMINATORS = ("faces", "all")


def celebrity_harmonic_mean(acc_erased: float, acc_preserved: float) -> float:
    """``H_c = 2 / ((1 − Acc_e)⁻¹ + Acc_p⁻¹)`` (ANT Eq. 8 as used in Table 2); 0 when either term is 0."""
    for name, value in (("acc_erased", acc_erased), ("acc_preserved", acc_preserved)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be an accuracy in [0, 1], got {value}")
    erased_gone, preserved = 1.0 - acc_erased, acc_preserved
    if erased_gone == 0.0 or preserved == 0.0:
        return 0.0
    return 2.0 / (1.0 / erased_gone + 1.0 / preserved)


def top1_accuracy(predicted_names: Sequence[str], target_names: Sequence[str], face_found=None,
                  over: str = "faces") -> float:
    """Share of images whose top-1 name is the prompted one, over images with a face (GCD) or over all images."""
    if over not in ACCURACY_DENOMINATORS:
        raise ValueError(f"over must be one of {ACCURACY_DENOMINATORS}, got {over!r}")
    predicted_names, target_names = list(predicted_names), list(target_names)
    if len(predicted_names) != len(target_names):
        raise ValueError(f"got {len(predicted_names)} predictions but {len(target_names)} targets")
    face_found = np.ones(len(target_names), bool) if face_found is None else np.asarray(face_found, dtype=bool)
    if face_found.shape != (len(target_names),):
        raise ValueError(f"face_found must have shape ({len(target_names)},), got {face_found.shape}")
    hits = np.array([p == t for p, t in zip(predicted_names, target_names)], dtype=bool) & face_found
    denominator = int(face_found.sum()) if over == "faces" else len(target_names)
    return float(hits.sum() / denominator) if denominator else float("nan")


def identity_metrics(identify: Callable, erased_images, erased_names: Sequence[str], preserved_images,
                     preserved_names: Sequence[str], over: str = "faces") -> dict:
    """ANT Table 2's row: ``{"Acc_e", "Acc_p", "H_c", "Face Ratio"}`` from portraits of both groups.

    ``erased_names[i]`` is the celebrity prompted for ``erased_images[i]`` (same for the preserved group).
    ``Face Ratio`` is over all portraits of both groups.
    """
    predicted_e, face_e = _identify(identify, erased_images)
    predicted_p, face_p = _identify(identify, preserved_images)
    acc_e = top1_accuracy(predicted_e, erased_names, face_e, over)
    acc_p = top1_accuracy(predicted_p, preserved_names, face_p, over)
    h_c = celebrity_harmonic_mean(acc_e, acc_p) if np.isfinite(acc_e) and np.isfinite(acc_p) else float("nan")
    face_ratio = float(np.concatenate([face_e, face_p]).mean())
    return {"Acc_e": acc_e, "Acc_p": acc_p, "H_c": h_c, "Face Ratio": face_ratio}


def _identify(identify: Callable, images) -> tuple[list[str], np.ndarray]:
    images = check_images(images)
    names, face_found = identify(images)
    names, face_found = list(names), np.asarray(face_found, dtype=bool)
    if len(names) != len(images) or face_found.shape != (len(images),):
        raise ValueError(f"identify must return (names, face_found) for each of the {len(images)} images, got "
                         f"{len(names)} names and face_found of shape {face_found.shape}")
    return names, face_found


class MiniIdentityRecogniser:
    """The mini identity classifier as ``identify(images) -> (names, face_found)``."""

    def __init__(self, world, face_threshold: float = FACE_THRESHOLD):
        self.evaluators = mini_evaluators(world)
        self.names = tuple(self.evaluators.identities)
        self.face_threshold = face_threshold

    def __call__(self, images) -> tuple[list[str], np.ndarray]:
        logprobs, face_prob = self.evaluators.identity_logprobs(check_images(images))
        names = [self.names[int(i)] for i in logprobs.argmax(-1)]
        return names, (face_prob >= self.face_threshold).numpy()


class PluggableIdentityRecogniser:
    """The paper world's celebrity recogniser: a user-supplied ``identify(images) -> (names, face_found)``; wrap
    the papers' GIPHY Celebrity Detector (not bundled) or any face recogniser in it."""

    def __init__(self, identify: Callable | None = None):
        if identify is None:
            raise ValueError(
                "the GIPHY Celebrity Detector (GCD) used by ANT/MACE for Acc_e, Acc_p and the face ratio is not "
                "bundled with unlearnkit; install it from github.com/Giphy/celeb-detection-oss with its model files "
                "and pass identify=callable(images uint8 [N,H,W,3]) -> (top-1 names [N], face_found bool [N])")
        if not callable(identify):
            raise TypeError(f"identify must be callable, got {type(identify).__name__}")
        self.identify = identify

    def __call__(self, images) -> tuple[list[str], np.ndarray]:
        return _identify(self.identify, images)
