"""FID with clean-fid — ANT Tables 1–3 and SM Tables 1, 3 (generated images vs. real MS-COCO images).

clean-fid in clean mode (PIL-bicubic resize to 299, the StyleGAN2 Inception's pool3, 2048-d), as ANT reports it;
only the feature extractor, which the world provides (``world.fid_extractor()``), changes:

* :class:`InceptionFeatureExtractor` — clean-fid's ``InceptionV3W`` from a local ``inception-2015-12-05.pt``
  (never downloaded);
* :class:`MiniFeatureExtractor` — the mini world's CLIP image tower (a clean-fid ``custom_feat_extractor``), at
  the mini images' native 32 px.

Either side of :func:`compute_fid` may be an image array, a folder of images (read by clean-fid's
``get_folder_features``) or precomputed :class:`FeatureStatistics` (e.g. the COCO reference, computed once).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.downloads_helper import inception_url as INCEPTION_URL
from cleanfid.resize import build_resizer, make_resizer

from unlearnkit.metrics import check_images, check_weights_file, mini_evaluators

__all__ = [
    "INCEPTION_FILE_NAME",
    "INCEPTION_URL",
    "FeatureStatistics",
    "InceptionFeatureExtractor",
    "MiniFeatureExtractor",
    "image_features",
    "feature_statistics",
    "compute_fid",
    "frechet_distance",
]

INCEPTION_FILE_NAME = "inception-2015-12-05.pt"  # the name clean-fid's InceptionV3W loads from its folder


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean ``mu [D]`` and covariance ``sigma [D, D]`` of a feature set (what FID compares), with its size."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    factor: np.ndarray | None = None   # B [N, D] with sigma = BᵀB, kept when N ≤ D (a low-rank covariance)

    @classmethod
    def from_features(cls, features: np.ndarray) -> "FeatureStatistics":
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need features [N >= 2, D] to estimate a covariance, got shape {features.shape}")
        mu = features.mean(axis=0)
        factor = (features - mu) / np.sqrt(len(features) - 1) if len(features) <= features.shape[1] else None
        return cls(mu, np.cov(features, rowvar=False), len(features), factor)

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mu=self.mu, sigma=self.sigma, count=self.count)
        return path

    @classmethod
    def load(cls, path) -> "FeatureStatistics":
        """Statistics written by :meth:`save` (``.npz``, read without pickles)."""
        import zipfile

        from unlearnkit.core.errors import BadFileError

        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["mu"], data["sigma"], int(data["count"]))
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise BadFileError(path, f"is not feature statistics written by FeatureStatistics.save ({error})") from None


class InceptionFeatureExtractor(torch.nn.Module):
    """clean-fid's Inception (pool3, 2048-d) from a local ``inception-2015-12-05.pt``; clean-mode resize to 299."""

    def __init__(self, weights_path, device="cpu"):
        super().__init__()
        path = check_weights_file(weights_path, "clean-fid Inception", f"clean-fid's inception file ({INCEPTION_URL})")
        if path.name != INCEPTION_FILE_NAME:
            raise ValueError(f"clean-fid loads the Inception weights by the name {INCEPTION_FILE_NAME!r}; "
                             f"rename {str(path)!r} to it")
        from cleanfid.inception_torchscript import InceptionV3W

        from unlearnkit.core.errors import BadFileError
        from unlearnkit.core.validation import check_device

        self.device = check_device(device)
        # clean-fid reads this file with torch.jit.load (TorchScript, never a pickle fallback): it is declared
        # TorchScript by its name and key
        with warnings.catch_warnings():  # torch.jit is deprecated; the file clean-fid reads is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            try:
                net = InceptionV3W(str(path.parent), download=False, resize_inside=False)
            except (RuntimeError, ValueError, AttributeError) as error:
                raise BadFileError(path, f"is not clean-fid's TorchScript Inception "
                                         f"({str(error).strip().splitlines()[0][:200]})") from None
        self.net = net.to(self.device).eval()
        self.fn_resize = build_resizer("clean")

    @torch.no_grad()
    def forward(self, images_0_255: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 299, 299]`` floats in ``[0, 255]`` → ``[B, 2048]``."""
        return self.net(images_0_255.to(self.device)).cpu()


class MiniFeatureExtractor(torch.nn.Module):
    """The mini CLIP image tower as clean-fid's ``custom_feat_extractor``; images of another size are resized
    (PIL bicubic) to ``image_size`` (default: the mini evaluators' ``image_size``, 32)."""

    def __init__(self, world, image_size: int | None = None):
        super().__init__()
        from unlearnkit.core.validation import check_integer

        self.evaluators = mini_evaluators(world)
        check_integer(image_size, "image_size", minimum=1, allow_none=True)
        if image_size is None:
            image_size = self.evaluators.image_size
        self.fn_resize = make_resizer("PIL", False, "bicubic", (image_size, image_size))

    @torch.no_grad()
    def forward(self, images_0_255: torch.Tensor) -> torch.Tensor:
        return self.evaluators.image_features(images_0_255.float() / 255)


def image_features(images, extractor, batch_size: int = 64) -> np.ndarray:
    """``[N, D]`` features of an image array or of every image in a folder (recursively)."""
    from unlearnkit.core.validation import check_integer

    check_integer(batch_size, "batch_size", minimum=1)
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
        return cleanfid_fid.get_folder_features(str(folder), model=extractor, num_workers=0, batch_size=batch_size,
                                                device=torch.device("cpu"), mode="clean",
                                                custom_fn_resize=extractor.fn_resize, verbose=False)
    images = check_images(images)
    features = []
    for start in range(0, len(images), batch_size):
        # what clean-fid's ResizeDataset does to each decoded image: resize to float32, HWC → CHW, keep [0, 255]
        batch = np.stack([extractor.fn_resize(image) for image in images[start:start + batch_size]])
        batch = torch.from_numpy(batch.astype(np.float32)).permute(0, 3, 1, 2)
        features.append(cleanfid_fid.get_batch_features(batch, extractor, torch.device("cpu")))
    return np.concatenate(features)


def feature_statistics(images, extractor, batch_size: int = 64) -> FeatureStatistics:
    return FeatureStatistics.from_features(image_features(images, extractor, batch_size))


def compute_fid(generated, reference, extractor=None, batch_size: int = 64) -> float:
    """Fréchet distance between two image sets (arrays, folders or :class:`FeatureStatistics`); ``extractor`` is
    needed for any side that is not statistics yet."""
    stats = []
    for side in (generated, reference):
        if isinstance(side, FeatureStatistics):
            stats.append(side)
        elif extractor is None:
            raise ValueError("an extractor is needed to compute features of images; pass InceptionFeatureExtractor "
                             "(paper) or MiniFeatureExtractor (mini)")
        else:
            stats.append(feature_statistics(side, extractor, batch_size))
    if stats[0].mu.shape != stats[1].mu.shape:
        raise ValueError(f"feature sizes differ: {stats[0].mu.shape} vs {stats[1].mu.shape}")
    return frechet_distance(*stats)


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """``‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a Σ_b)^{1/2}`` (the FID of clean-fid).

    Exact; when one side has fewer samples ``N`` than dimensions, the trace term comes from an ``N × N``
    eigenproblem with the same non-zero spectrum instead of a ``D × D`` matrix square root.
    """
    low_rank = [s for s in (a, b) if s.factor is not None]
    if not low_rank:
        return float(cleanfid_fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
    small = min(low_rank, key=lambda s: s.count)
    other = b if small is a else a
    eigenvalues = np.linalg.eigvalsh(small.factor @ other.sigma @ small.factor.T)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt)
