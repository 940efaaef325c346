"""Every metric the three papers report, each with a mini backend and a paper backend behind one call.

A metric takes images (uint8 ``[N, H, W, 3]``) and a *backend* — built by the world (``world.object_classifier()``,
``world.fid_extractor()``, …) — and returns a flat ``dict``, one table row per model:

=====================  ==========================  ==============================  ==================================
metric                 call                        mini backend                    paper backend
=====================  ==========================  ==============================  ==================================
Imagenette accuracy    :func:`classifier_accuracy` :class:`MiniObjectClassifier`   :class:`ResNet50Classifier`
CLIP score             :func:`mean_clip_score`     :class:`MiniCLIPScorer`         :class:`OpenCLIPScorer`
FID                    :func:`compute_fid`         :class:`MiniFeatureExtractor`   :class:`InceptionFeatureExtractor`
LPIPS                  :func:`mean_lpips`          :class:`MiniLPIPS`              :class:`AlexNetLPIPS`
NudeNet counts         :func:`nudity_counts`       :class:`MiniNudityDetector`     :class:`NudeNetDetector`
celebrity accuracy     :func:`identity_metrics`    :class:`MiniIdentityRecogniser` :class:`PluggableIdentityRecogniser`
``‖Δθ‖_p``             :func:`delta_norm`          (weights only)                  (weights only)
=====================  ==========================  ==============================  ==================================

Paper backends take local weight files and raise ``FileNotFoundError`` naming the file and where it comes from
before loading anything; nothing here downloads.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def check_images(images) -> np.ndarray:
    """``images`` as a contiguous uint8 ``[N, H, W, 3]`` array, or a ``ValueError`` saying what was given."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


def check_weights_file(path, what: str, source: str) -> Path:
    """``path`` as a ``Path`` when it is an existing file; else ``FileNotFoundError`` naming it and its source."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what}: expected a path to a local weights file, got {type(path).__name__} {path!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights file {str(path)!r} not found. It comes from {source}; download it "
                                f"on a machine with network access and pass its local path.")
    return path


#: what a mini backend reads from the mini world's evaluators (``MiniWorld.evaluators``)
MINI_EVALUATOR_MEMBERS = ("nets", "object_probs", "superclass_probs", "unsafe_scores", "identity_logprobs",
                          "image_features", "objects", "superclasses", "identities", "unsafe_labels", "image_size")


def mini_evaluators(world_or_evaluators):
    """The mini evaluators of a mini world (or the evaluators themselves); ``TypeError`` for anything else."""
    evaluators = getattr(world_or_evaluators, "evaluators", world_or_evaluators)
    if not all(hasattr(evaluators, member) for member in MINI_EVALUATOR_MEMBERS):
        raise TypeError(f"expected a MiniWorld or MiniEvaluators, got {type(world_or_evaluators).__name__}")
    return evaluators


def mean_and_std(values) -> tuple[float, float]:
    """Mean and (population) standard deviation, as the papers' "mean ± std" columns."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("cannot aggregate an empty set of scores")
    return float(values.mean()), float(values.std())


from unlearnkit.metrics.classification import (  # noqa: E402  (the helpers above are used by the submodules)
    IMAGENETTE_CLASSES,
    IMAGENETTE_IMAGENET_INDEX,
    MiniObjectClassifier,
    ResNet50Classifier,
    classifier_accuracy,
    superclass_hit_rate,
)
from unlearnkit.metrics.clip_score import MiniCLIPScorer, OpenCLIPScorer, erase_preserve_clip, mean_clip_score, style_erasure_gap  # noqa: E402
from unlearnkit.metrics.fid import (  # noqa: E402
    FeatureStatistics,
    InceptionFeatureExtractor,
    MiniFeatureExtractor,
    compute_fid,
    feature_statistics,
    image_features,
)
from unlearnkit.metrics.identity import (  # noqa: E402
    MiniIdentityRecogniser,
    PluggableIdentityRecogniser,
    celebrity_harmonic_mean,
    identity_metrics,
    top1_accuracy,
)
from unlearnkit.metrics.lpips_distance import AlexNetLPIPS, MiniLPIPS, mean_lpips  # noqa: E402
from unlearnkit.metrics.nsfw import (  # noqa: E402
    NUDENET_EXPOSED_LABELS,
    NSFW_THRESHOLD,
    Detection,
    MiniNudityDetector,
    NudeNetDetector,
    NudityCounts,
    count_nudity,
    nudity_counts,
)
from unlearnkit.metrics.weights import delta_norm, weight_deltas  # noqa: E402

__all__ = [
    "check_images", "check_weights_file", "mini_evaluators", "mean_and_std",
    "IMAGENETTE_CLASSES", "IMAGENETTE_IMAGENET_INDEX", "MiniObjectClassifier", "ResNet50Classifier",
    "classifier_accuracy", "superclass_hit_rate",
    "MiniCLIPScorer", "OpenCLIPScorer", "mean_clip_score", "erase_preserve_clip", "style_erasure_gap",
    "FeatureStatistics", "InceptionFeatureExtractor", "MiniFeatureExtractor", "feature_statistics", "compute_fid",
    "image_features",
    "MiniIdentityRecogniser", "PluggableIdentityRecogniser", "celebrity_harmonic_mean", "identity_metrics",
    "top1_accuracy",
    "AlexNetLPIPS", "MiniLPIPS", "mean_lpips",
    "NUDENET_EXPOSED_LABELS", "NSFW_THRESHOLD", "Detection", "MiniNudityDetector", "NudeNetDetector",
    "NudityCounts", "count_nudity", "nudity_counts",
    "delta_norm", "weight_deltas",
]
