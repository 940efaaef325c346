"""The paper world: Stable Diffusion v1.4, as used by Sculpting Memory, SepME and ANT.

Two ways in:

* :func:`load_sd14` loads the real weights from a local diffusers folder (or a hub id where the network is
  allowed) and fails early, with one ``FileNotFoundError`` saying how to get them, when they are missing;
* :func:`build_sd14_architecture` builds the same classes from SD v1.4's configs with random weights and a small
  latent size, so module names, shapes and parameter scopes can be tested on a CPU without any download.

The configs live in ``sd14_configs.json`` beside this file. The tokenizer is rebuilt offline from the BPE merges
that ship inside ``open_clip`` (:func:`clip_tokenizer_from_open_clip`).
"""
from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "SD14_UNET_CONFIG",
    "SD14_VAE_CONFIG",
    "SD14_TEXT_CONFIG",
    "SD14_SCHEDULER_CONFIG",
    "SD14_HUB_ID",
    "clip_tokenizer_from_open_clip",
    "sd14_ddim_scheduler",
    "build_sd14_architecture",
    "load_sd14",
    "PaperWorld",
]

SD14_HUB_ID = "CompVis/stable-diffusion-v1-4"
CONFIG_FILE = Path(__file__).with_name("sd14_configs.json")

# CLIP's BPE vocabulary: 256 byte characters, their end-of-word variants, 48,894 merges, then two specials.
CLIP_NUM_MERGES = 49152 - 256 - 2
CLIP_START_TOKEN = "<|startoftext|>"
CLIP_END_TOKEN = "<|endoftext|>"

# diffusers UNet weight files: plain, sharded, or with a variant such as ``.fp16``.
UNET_WEIGHT_FILE = re.compile(
    r"^diffusion_pytorch_model(\.(?P<variant>[A-Za-z0-9_]+))?(-\d+-of-\d+)?\.(?P<format>safetensors|bin)$"
)
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TRUE_ENV_VALUES = {"1", "on", "yes", "true"}


def _read_sd14_configs() -> dict[str, dict[str, Any]]:
    with open(CONFIG_FILE, encoding="utf-8") as handle:
        return json.load(handle)


_CONFIGS = _read_sd14_configs()
SD14_UNET_CONFIG: dict[str, Any] = _CONFIGS["unet"]
SD14_VAE_CONFIG: dict[str, Any] = _CONFIGS["vae"]
SD14_TEXT_CONFIG: dict[str, Any] = _CONFIGS["text_encoder"]
SD14_SCHEDULER_CONFIG: dict[str, Any] = _CONFIGS["scheduler"]


def _without_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """Drop the ``_…`` metadata keys and ``architectures``, which the model constructors do not take."""
    return {key: value for key, value in config.items() if not key.startswith("_") and key != "architectures"}


# --------------------------------------------------------------------------------------------- tokenizer


@lru_cache(maxsize=1)
def _clip_vocabulary_and_merges() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """CLIP's vocabulary and merge list, built as CLIP's ``SimpleTokenizer`` builds them from the BPE file.

    Returns ``(vocab, merges)``: vocab in id order (49,408 entries), merges as ``"a b"`` lines (48,894).
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as handle:
        merge_lines = handle.read().decode("utf-8").split("\n")
    merges = tuple(merge_lines[1 : CLIP_NUM_MERGES + 1])  # line 0 is the file's version header
    byte_chars = list(bytes_to_unicode().values())
    vocab = (
        byte_chars
        + [char + "</w>" for char in byte_chars]
        + ["".join(merge.split()) for merge in merges]
        + [CLIP_START_TOKEN, CLIP_END_TOKEN]
    )
    return tuple(vocab), merges


def clip_tokenizer_from_open_clip(model_max_length: int = 77):
    """A ``CLIPTokenizer`` equal to ``openai/clip-vit-large-patch14``'s, built offline from open_clip's BPE file.

    SD v1.4 pads with ``<|endoftext|>`` (id 49407) to ``model_max_length``; open_clip pads with 0, so the two
    agree on every id up to and including the end token.
    """
    from transformers import CLIPTokenizer

    if not isinstance(model_max_length, int) or model_max_length < 2:
        raise ValueError(f"model_max_length must be an integer >= 2, got {model_max_length!r}")
    vocab, merges = _clip_vocabulary_and_merges()
    with tempfile.TemporaryDirectory(prefix="unlearnkit-clip-bpe-") as folder:
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as handle:
            json.dump({token: index for index, token in enumerate(vocab)}, handle, ensure_ascii=False)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as handle:
            handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(
            folder,
            local_files_only=True,
            model_max_length=model_max_length,
            bos_token=CLIP_START_TOKEN,
            eos_token=CLIP_END_TOKEN,
            unk_token=CLIP_END_TOKEN,
            pad_token=CLIP_END_TOKEN,
        )


# ------------------------------------------------------------------------------------------ architecture


def sd14_ddim_scheduler():
    """DDIM with SD v1.4's training betas (scaled-linear 0.00085 → 0.012, 1000 steps, ``steps_offset`` 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(SD14_SCHEDULER_CONFIG)


def build_sd14_architecture(sample_size: int = 16, seed: int = 0, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float32):
    """A ``StableDiffusionPipeline`` with SD v1.4's architecture and random weights.

    Only the UNet's ``sample_size`` (latent side, 64 in SD v1.4) is overridden, which changes nothing but the
    default generation size; the VAE, text encoder and tokenizer are exactly SD v1.4's. Weights are drawn from
    ``seed`` without disturbing the caller's global random state.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if not isinstance(sample_size, int) or sample_size < 8 or sample_size % 8:
        raise ValueError(f"sample_size must be a positive multiple of 8 (three 2× downsamplings), got {sample_size!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**{**_without_metadata(SD14_UNET_CONFIG), "sample_size": sample_size})
        vae = AutoencoderKL(**_without_metadata(SD14_VAE_CONFIG))
        text_encoder = CLIPTextModel(CLIPTextConfig(**_without_metadata(SD14_TEXT_CONFIG)))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer_from_open_clip(SD14_TEXT_CONFIG["max_position_embeddings"]),
        unet=unet,
        scheduler=sd14_ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(device)
    if dtype != torch.float32:  # weights are drawn in float32, then cast
        pipe.to(dtype=dtype)
    return pipe


# ------------------------------------------------------------------------------------------ real weights


def _how_to_get_sd14(path: str) -> str:
    return (
        f"Download the diffusers folder on a machine with network access, e.g.\n"
        f"    huggingface-cli download {SD14_HUB_ID} --local-dir {path}\n"
        f"and copy it here, or pass the folder that holds it with --model-path."
    )


def _hub_downloads_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in TRUE_ENV_VALUES


def _looks_like_hub_id(model_path: str) -> bool:
    return bool(HUB_ID_PATTERN.match(model_path)) and not model_path.startswith((".", "~"))


def _unet_weight_files(unet_folder: Path) -> list[Path]:
    """UNet weight files in ``unet_folder`` (plain, sharded or variant ``….fp16.safetensors``)."""
    if not unet_folder.is_dir():
        return []
    return sorted(path for path in unet_folder.iterdir() if UNET_WEIGHT_FILE.match(path.name))


def _weight_variant(weight_files: list[Path]) -> str | None:
    """The variant (e.g. ``"fp16"``) when a folder holds only variant weight files, else ``None``."""
    variants = [UNET_WEIGHT_FILE.match(path.name).group("variant") for path in weight_files]
    if not variants or None in variants:
        return None
    return sorted(set(variants))[0]


def _check_local_sd14_folder(folder: Path) -> list[Path]:
    """Raise one ``FileNotFoundError`` unless ``folder`` is a diffusers folder with UNet weights; return them."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Stable Diffusion v1.4 folder not found: {str(folder)!r} does not exist or is not a directory.\n"
            + _how_to_get_sd14(str(folder))
        )
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} is not a diffusers pipeline folder (no model_index.json).\n" + _how_to_get_sd14(str(folder))
        )
    weight_files = _unet_weight_files(folder / "unet")
    if not weight_files:
        raise FileNotFoundError(
            f"No UNet weights in {str(folder / 'unet')!r} (expected diffusion_pytorch_model.safetensors or .bin).\n"
            + _how_to_get_sd14(str(folder))
        )
    return weight_files


def _load_from_hub(hub_id: str, dtype):
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(hub_id, safety_checker=None, requires_safety_checker=False,
                                                       dtype=dtype)
    except OSError as error:
        raise FileNotFoundError(
            f"Could not load Stable Diffusion v1.4 from {hub_id!r}: not a local folder and the hub download failed "
            f"({error}).\n" + _how_to_get_sd14("PATH")
        ) from error


def _load_from_folder(folder: Path, weight_files: list[Path], dtype):
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(
            folder,
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
            use_safetensors=any(path.suffix == ".safetensors" for path in weight_files),
            variant=_weight_variant(weight_files),
            dtype=dtype,
        )
    except OSError as error:  # a component other than the UNet is missing or unreadable
        raise FileNotFoundError(
            f"Could not load Stable Diffusion v1.4 from {str(folder)!r}: {error}\n" + _how_to_get_sd14(str(folder))
        ) from error


def load_sd14(model_path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """SD v1.4 from a local diffusers folder (or, where ``HF_HUB_OFFLINE`` is not set, a hub id), with DDIM.

    Missing folders and missing UNet weights raise one ``FileNotFoundError`` naming the path and how to get the
    weights, before any model is built. ``dtype=None`` keeps diffusers' default (float32).
    """
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"model_path must be a path (str or os.PathLike), got {type(model_path).__name__}: {model_path!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or None, got {dtype!r}")
    path_text = os.fspath(model_path)
    if not path_text:
        raise ValueError("model_path is empty: give the SD v1.4 diffusers folder")
    folder = Path(path_text).expanduser()

    if not folder.exists() and isinstance(model_path, str) and _looks_like_hub_id(path_text):
        if not _hub_downloads_allowed():
            raise FileNotFoundError(
                f"Stable Diffusion v1.4 folder not found: {path_text!r} is not a local folder, and HF_HUB_OFFLINE "
                f"forbids treating it as a hub id.\n" + _how_to_get_sd14("PATH")
            )
        pipe = _load_from_hub(path_text, dtype)
    else:
        pipe = _load_from_folder(folder, _check_local_sd14_folder(folder), dtype)
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe.to(device)


# ----------------------------------------------------------------------------------------------- world


@dataclass
class PaperWorld:
    """The paper world: SD v1.4 plus the papers' evaluators and prompt sets, all from local files.

    Args:
        pipe: the SD v1.4 pipeline (:func:`load_sd14`).
        data_dir: folder with the MIT-licensed prompt CSVs (``i2p_4703.csv``, ``coco_30k.csv``,
            ``imagenette_prompts.csv``).
        evaluator_weights: local weight files — ``open_clip`` (OpenAI ViT-B/32), ``inception``
            (clean-fid's ``inception-2015-12-05.pt``), ``resnet50`` (torchvision IMAGENET1K_V1), ``alexnet``.
        coco_images_dir: real MS-COCO images, the FID reference.
    """

    pipe: Any
    name: str = "paper"
    device: str | torch.device = "cpu"
    evaluators: dict = field(default_factory=dict)
    data_dir: str | os.PathLike | None = None
    evaluator_weights: dict = field(default_factory=dict)
    coco_images_dir: str | os.PathLike | None = None

    def __post_init__(self):
        from unlearnkit.diffusion import TextEmbeddingCache
        from unlearnkit.sampling import SamplerSettings

        self.embeddings = TextEmbeddingCache(self.pipe.tokenizer, self.pipe.text_encoder, self.device)
        self.sampler = SamplerSettings(num_inference_steps=50, guidance_scale=7.5)  # ANT §4.1, SM §4.1

    @property
    def sld_safety_concept(self) -> str:
        """SLD's safety text c_S: its paper's I2P categories."""
        from unlearnkit.sld import SLD_SAFETY_CONCEPT

        return SLD_SAFETY_CONCEPT

    @classmethod
    def load(cls, model_path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None, **kwargs) -> "PaperWorld":
        """The paper world around :func:`load_sd14` ``(model_path, device, dtype)``."""
        return cls(pipe=load_sd14(model_path, device=device, dtype=dtype), device=device, **kwargs)

    # --- concepts ---------------------------------------------------------------------------------------------
    def concept(self, name: str):
        """"nudity" (ANT's four prompts), an Imagenette class (anchor = its SM Table 6 superclass), or any other
        name (prompted as "a photo of {name}", anchored to the empty prompt)."""
        from unlearnkit.concepts import Concept
        from unlearnkit.data import paper_maps

        if name in ("nudity", "nsfw"):
            return Concept("nudity", tuple(paper_maps.ANT_NSFW_ERASE_PROMPTS), anchor="a person wearing clothes",
                           kind="unsafe", label="unsafe")
        if name in paper_maps.IMAGENETTE_SUPERCLASS:
            superclass = paper_maps.IMAGENETTE_SUPERCLASS[name]
            return Concept(name, (f"a photo of {name}", f"a photo of a {name}"), anchor=superclass, kind="object",
                           label=paper_maps.IMAGENETTE_CLASS_INDEX[name],
                           anchor_prompts=(f"a photo of {superclass}", f"a photo of a {superclass}"))
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"concept name must be a non-empty string, got {name!r}")
        return Concept(name, (name, f"a photo of {name}"), anchor="", kind="other")

    def augmented_prompts(self, concept, num_prompts: int, seed: int = 0) -> list[str]:
        """ANT's prompt augmentation (§3.3) by the seeded generator of :mod:`unlearnkit.prompt_augmentation`:
        the concept's terms (NSFW: ANT's four erase prompts) in varied context templates."""
        from unlearnkit import prompt_augmentation as pa

        if concept.kind == "unsafe":
            return pa.augmented_prompts(concept.prompts, num_prompts, seed, pa.DEFAULT_TEMPLATES)
        return pa.augmented_prompts([concept.name], num_prompts, seed, pa.OBJECT_TEMPLATES)

    # --- evaluators -------------------------------------------------------------------------------------------
    def _weights(self, key: str, what: str):
        if key not in self.evaluator_weights:
            raise FileNotFoundError(f"the paper world needs the {what} weights: pass evaluator_weights={{'{key}': PATH}}")
        return self.evaluator_weights[key]

    def nsfw_detector(self):
        from unlearnkit.metrics.nsfw import NudeNetDetector

        return NudeNetDetector()

    def clip_scorer(self):
        from unlearnkit.metrics.clip_score import OpenCLIPScorer

        return OpenCLIPScorer(self._weights("open_clip", "OpenAI CLIP ViT-B/32"), device=self.device)

    def fid_extractor(self):
        from unlearnkit.metrics.fid import InceptionFeatureExtractor

        return InceptionFeatureExtractor(self._weights("inception", "clean-fid Inception (inception-2015-12-05.pt)"))

    def unsafe_flags(self, images):
        from unlearnkit.metrics.nsfw import nudity_counts

        return nudity_counts(images, self.nsfw_detector()).flagged

    def redact(self, images):
        """Black boxes over every NudeNet detection (≥ 0.6), as the papers' figures do."""
        from unlearnkit.metrics.nsfw import nudity_counts
        from unlearnkit.redaction import redact_boxes

        return redact_boxes(images, nudity_counts(images, self.nsfw_detector()).boxes_per_image)

    # --- prompt sets ----------------------------------------------------------------------------------------------
    def _data_dir(self):
        if self.data_dir is None:
            raise FileNotFoundError("the paper world needs data_dir: the folder holding i2p_4703.csv, coco_30k.csv and "
                                    "imagenette_prompts.csv (MIT-licensed, from rohitgandikota/unified-concept-editing)")
        return self.data_dir

    def i2p_prompts(self, seeds_per_prompt: int = 1):
        """The 931 "sexual" I2P prompts with their evaluation seeds (ANT Table 1 uses all 4,703: load_i2p)."""
        from unlearnkit.data import load_i2p

        frame = load_i2p(self._data_dir(), sexual_only=True)
        return frame[["prompt", "seed"]].reset_index(drop=True)

    def coco_prompts(self, n: int = 30000):
        """(COCO-30k captions ``prompt, seed``, the folder of real COCO images as the FID reference)."""
        from unlearnkit.data import load_coco30k

        if self.coco_images_dir is None or not Path(self.coco_images_dir).is_dir():
            raise FileNotFoundError(f"FID needs real MS-COCO images: pass coco_images_dir (got {self.coco_images_dir!r})")
        frame = load_coco30k(self._data_dir(), limit=n)
        return frame[["prompt", "seed"]].reset_index(drop=True), str(self.coco_images_dir)
