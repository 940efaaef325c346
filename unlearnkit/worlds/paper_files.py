"""Every local file the paper world reads, named in one place with where to get it, and the fail-fast check.

``evaluator_weights`` keys (``unlearnkit reproduce --evaluator KEY=PATH``):

=============== ============================================================ ==========================================
key             file                                                          used for
=============== ============================================================ ==========================================
open_clip       open_clip ViT-B-32 OpenAI weights (``open_clip_model.safetensors`` CLIP score, image features, zero-shot
                of ``timm/vit_base_patch32_clip_224.openai``, or OpenAI's    style / identity / superclass evaluators
                TorchScript ``ViT-B-32.pt`` with ``open_clip_format``)
open_clip_config optional: an open_clip JSON model config used instead of     a smaller CLIP (the smoke world)
                ``ViT-B-32``
open_clip_format optional: ``torchscript`` when ``open_clip`` is OpenAI's    ViT-B-32.pt through torch.jit.load only
                TorchScript ``ViT-B-32.pt`` (default ``state_dict``)         (a state dict is never unpickled)
inception       clean-fid's ``inception-2015-12-05.pt`` (TorchScript)         FID
resnet50        torchvision ``ResNet50_Weights.IMAGENET1K_V1`` (``.pth`` or  Imagenette accuracy (SM, SepME)
                ``.safetensors``)
alexnet         torchvision ``AlexNet_Weights.IMAGENET1K_V1`` (``.pth`` or   LPIPS (SepME)
                ``.safetensors``)
nudenet         optional: a NudeNet 3.4 ONNX file (default: the one in the   NSFW detections (threshold 0.6)
                ``nudenet`` wheel)
identity        optional: ``module:callable`` returning ``identify(images) ->  celebrity recognition (ANT Table 2)
                (names, face_found)`` (e.g. a GIPHY Celebrity Detector
                wrapper); default: open_clip zero-shot over the 200 names
=============== ============================================================ ==========================================

Plus the model folder (``model_path``), the prompt CSVs in ``data_dir`` and real MS-COCO images in
``coco_images_dir`` (FID only: without them FID is skipped, with the reason in the table and ``run.json``).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EVALUATOR_FILES", "DATA_FILES", "NOTEBOOK_NEEDS", "MissingFilesError", "missing_files",
           "check_paper_files"]

#: key → (what it is, where to get it); optional keys are marked by ``None`` as their source
EVALUATOR_FILES = {
    "open_clip": ("open_clip ViT-B-32 (OpenAI weights)",
                  "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors --local-dir "
                  "weights/  (or OpenAI's ViT-B-32.pt)"),
    "inception": ("clean-fid Inception (inception-2015-12-05.pt)",
                  "the file clean-fid downloads on first use (cleanfid.downloads_helper.inception_url); keep its name"),
    "resnet50": ("torchvision ResNet-50 IMAGENET1K_V1",
                 "torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url (resnet50-0676ba61.pth)"),
    "alexnet": ("torchvision AlexNet IMAGENET1K_V1",
                "torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url (alexnet-owt-7be5be79.pth)"),
}
OPTIONAL_EVALUATOR_KEYS = ("open_clip_config", "open_clip_format", "nudenet", "identity")
#: evaluator keys whose value is a word or a ``module:callable``, not a path
NON_PATH_EVALUATOR_KEYS = ("open_clip_format", "identity")

#: prompt CSVs (MIT, from the unified-concept-editing repository's data/ folder)
DATA_FILES = {"i2p": "i2p_4703.csv", "coco": "coco_30k.csv", "imagenette": "imagenette_prompts.csv"}

#: what each notebook reads in the paper world (``coco_images`` is optional: FID is skipped without it)
NOTEBOOK_NEEDS = {
    "01_cfg_reversal": ("open_clip", "resnet50"),
    "02_single_concept_nsfw": ("open_clip", "inception", "i2p", "coco", "coco_images"),
    "03_sequential_imagenette": ("open_clip", "resnet50", "coco", "imagenette"),
    "04_sepme_restoration": ("open_clip", "resnet50", "alexnet"),
    "05_mass_fusion": ("open_clip", "inception", "coco", "coco_images"),
}
OPTIONAL_NEEDS = ("coco_images",)


class MissingFilesError(FileNotFoundError):
    """Every file a run needs and does not have, listed at once with how to get each."""

    def __init__(self, missing: list[str]):
        self.missing = list(missing)
        super().__init__("the paper world is missing files (nothing was computed):\n  - " + "\n  - ".join(missing))


def _is_file(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and Path(path).expanduser().is_file()


def missing_files(needs, model_path=None, data_dir=None, evaluator_weights=None, coco_images_dir=None) -> list[str]:
    """One line per missing input among ``needs`` (keys of :data:`EVALUATOR_FILES`, :data:`DATA_FILES`,
    ``"coco_images"``) plus the model folder; optional inputs (COCO images) are not reported."""
    weights = dict(evaluator_weights or {})
    missing = []
    folder = Path(os.fspath(model_path)).expanduser() if isinstance(model_path, (str, os.PathLike)) else None
    if folder is None:
        missing.append("model_path: a local Stable Diffusion v1.4 diffusers folder (hf download "
                       "CompVis/stable-diffusion-v1-4 --local-dir models/stable-diffusion-v1-4)")
    elif not (folder / "model_index.json").is_file():
        missing.append(f"model_path {str(folder)!r}: no model_index.json there (hf download "
                       f"CompVis/stable-diffusion-v1-4 --local-dir {folder})")
    for need in dict.fromkeys(needs):
        if need in EVALUATOR_FILES:
            what, source = EVALUATOR_FILES[need]
            if not _is_file(weights.get(need)):
                given = f" (given {weights[need]!r}: not a file)" if need in weights else ""
                missing.append(f"evaluator {need!r} — {what}{given}: get it with {source}; pass "
                               f"--evaluator {need}=PATH")
        elif need in DATA_FILES:
            name = DATA_FILES[need]
            if data_dir is None or not (Path(data_dir).expanduser() / name).is_file():
                missing.append(f"{name} in data_dir ({data_dir!r}): the MIT-licensed prompt CSV from the data/ folder "
                               "of rohitgandikota/unified-concept-editing; pass --data-dir FOLDER")
        elif need in OPTIONAL_NEEDS:
            continue
        else:
            raise ValueError(f"unknown paper-world input {need!r}")
    for key in OPTIONAL_EVALUATOR_KEYS:
        value = weights.get(key)
        if key in ("open_clip_config", "nudenet") and value is not None and not _is_file(value):
            missing.append(f"evaluator {key!r}: {value!r} is not a file")
    if weights.get("open_clip_format", "state_dict") not in ("state_dict", "torchscript"):
        missing.append(f"evaluator 'open_clip_format': {weights['open_clip_format']!r} is not state_dict or "
                       f"torchscript")
    return missing


def check_paper_files(needs, **inputs) -> None:
    """Raise one :class:`MissingFilesError` listing every missing input (see :func:`missing_files`)."""
    missing = missing_files(needs, **inputs)
    if missing:
        raise MissingFilesError(missing)
