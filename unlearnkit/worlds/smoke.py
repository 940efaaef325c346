"""The smoke world: every file the paper world reads, with tiny random weights, written offline for CI.

:func:`write_smoke_world` writes, deterministically from ``seed``:

* ``sd14-tiny/`` — a random-weight Stable Diffusion pipeline in SD v1.4's exact diffusers layout (same classes,
  same UNet and VAE parameter names, SD v1.4's PNDM scheduler config, CLIP's tokenizer; tiny widths, a 2-layer
  text encoder, 128 px images), loadable by ``StableDiffusionPipeline.from_pretrained`` and
  :func:`unlearnkit.worlds.paper.load_sd14`;
* ``evaluators/`` — random stand-ins in the formats the paper world reads: an open_clip model
  (``open_clip_model.safetensors`` + its JSON config ``tiny-clip.json``), a TorchScript clean-fid Inception
  (``inception-2015-12-05.pt``), torchvision ResNet-50 (``resnet50.safetensors``, the real architecture) and
  AlexNet (``alexnet.safetensors``, only the ``features.*`` tensors: LPIPS reads nothing else);
* ``coco/`` — random 64×64 PNG images, FID's reference folder.

The returned paths use the paper world's names (``model_path``, ``coco_images_dir`` and the
``evaluator_weights`` keys), so ``PaperWorld.load(p["model_path"], evaluator_weights={k: p[k] for k in
SMOKE_EVALUATOR_KEYS}, coco_images_dir=p["coco_images_dir"])`` runs the paper world on them.
Command line: ``python -m unlearnkit.worlds.smoke DIR [--seed N] [--coco-images N]`` prints the paths as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["SMOKE_EVALUATOR_KEYS", "TINY_UNET_OVERRIDES", "TINY_VAE_OVERRIDES", "TINY_TEXT_CONFIG",
           "TINY_OPEN_CLIP_CONFIG", "write_smoke_world", "main"]

MODEL_FOLDER = "sd14-tiny"
EVALUATOR_FOLDER = "evaluators"
COCO_FOLDER = "coco"
OPEN_CLIP_NAME = "tiny-clip"  # the open_clip model name is the config file's stem
SMOKE_EVALUATOR_KEYS = ("open_clip", "open_clip_config", "inception", "resnet50", "alexnet")
COCO_IMAGE_SIZE = 64

#: SD v1.4's UNet config with tiny widths (128 px images: latent side 16, so the lowest level keeps 2×2 positions
#: and GroupNorm has more than one value per group when training on a batch of one). The widths change exactly where SD
#: v1.4's (320, 640, 1280, 1280) do — a ResNet block has a ``conv_shortcut`` iff its channels change — so the
#: parameter names are SD v1.4's ((32, 32, 64, 64) would lack ``down_blocks.1.resnets.0.conv_shortcut``)
TINY_UNET_OVERRIDES = {"block_out_channels": [32, 64, 32, 32], "norm_num_groups": 32, "cross_attention_dim": 32,
                       "attention_head_dim": 8, "sample_size": 16}
#: SD v1.4's VAE config with tiny widths, changing where (128, 256, 512, 512) do (same parameter names)
TINY_VAE_OVERRIDES = {"block_out_channels": [32, 64, 32, 32], "norm_num_groups": 32, "sample_size": 128}
#: SD v1.4's text-encoder config with tiny widths (CLIP's vocabulary and 77 positions kept)
TINY_TEXT_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                    "projection_dim": 32, "vocab_size": 49408, "max_position_embeddings": 77}
#: SD v1.4's scheduler/scheduler_config.json (the folder ships PNDM; load_sd14 swaps in DDIM)
SD14_PNDM_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
                    "steps_offset": 1, "trained_betas": None}
#: SD v1.4's model_index.json components (library, class)
SD14_COMPONENTS = {
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
TINY_CLIP_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                    "image_size": 224, "patch_size": 32}
TINY_CLIP_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                  "vocab_size": 49408, "max_position_embeddings": 77}
#: an open_clip model config: tiny ViT (224 px, patch 32) and text tower, QuickGELU as the OpenAI weights
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


# ------------------------------------------------------------------------------------------ pipeline


def _tiny_sd14_pipeline():
    """The tiny pipeline's components (random weights drawn from the caller's seeded RNG)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    from unlearnkit.worlds.paper import (SD14_TEXT_CONFIG, SD14_UNET_CONFIG, SD14_VAE_CONFIG, _without_metadata,
                        clip_tokenizer_from_open_clip)

    unet = UNet2DConditionModel(**{**_without_metadata(SD14_UNET_CONFIG), **TINY_UNET_OVERRIDES})
    vae = AutoencoderKL(**{**_without_metadata(SD14_VAE_CONFIG), **TINY_VAE_OVERRIDES})
    text_encoder = CLIPTextModel(CLIPTextConfig(**{**_without_metadata(SD14_TEXT_CONFIG), **TINY_TEXT_CONFIG}))
    safety_checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=TINY_CLIP_TEXT,
                                                             vision_config=TINY_CLIP_VISION, projection_dim=32))
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, unet=unet,
        tokenizer=clip_tokenizer_from_open_clip(SD14_TEXT_CONFIG["max_position_embeddings"]),
        scheduler=PNDMScheduler(**SD14_PNDM_CONFIG),
        safety_checker=safety_checker.eval(), feature_extractor=CLIPImageProcessor(),
        requires_safety_checker=True,
    )


def _write_sd14_layout_index(folder: Path) -> None:
    """Rewrite ``model_index.json`` with exactly SD v1.4's entries (newer diffusers add ``image_encoder``)."""
    path = folder / "model_index.json"
    index = json.loads(path.read_text(encoding="utf-8"))
    written = {key: index[key] for key in SD14_COMPONENTS}
    if written != SD14_COMPONENTS:
        raise RuntimeError(f"the tiny pipeline's components {written} are not SD v1.4's {SD14_COMPONENTS}")
    out = {"_class_name": index["_class_name"], "_diffusers_version": index["_diffusers_version"], **written}
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------- evaluators


class _InceptionLayers(torch.nn.Module):
    """Stand-in for the Inception trunk: ``[B, 3, 299, 299]`` normalised floats → ``[B, 2048]`` (a strided conv,
    4×4 average pooling and a linear map; plain parameters, so the TorchScript code does not depend on
    ``PYTHONHASHSEED`` as ``nn.Conv2d``'s constants do)."""

    def __init__(self):
        super().__init__()
        conv, fc = torch.nn.Conv2d(3, 8, kernel_size=15, stride=15), torch.nn.Linear(8 * 4 * 4, 2048)
        self.conv_weight, self.conv_bias = conv.weight, conv.bias
        self.fc_weight, self.fc_bias = fc.weight, fc.bias

    def forward(self, x):
        h = torch.relu(torch.nn.functional.conv2d(x, self.conv_weight, self.conv_bias, stride=15))
        h = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 4), 1)
        return torch.nn.functional.linear(h, self.fc_weight, self.fc_bias)


class _InceptionStandIn(torch.nn.Module):
    """Stand-in for clean-fid's TorchScript Inception: ``forward(img_0_255, return_features=True)`` resizes
    (bilinear) to 299, normalises ``(x − 128) / 128`` and returns the 2048-d features (also without
    ``return_features``: the real model's 1008 logits are not modelled)."""

    def __init__(self):
        super().__init__()
        self.layers = _InceptionLayers()

    def forward(self, img, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False):
        x = img.float()
        if x.shape[2] != 299 or x.shape[3] != 299:
            x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


def _save_torchscript(module: torch.nn.Module, path: Path) -> None:
    """``torch.jit.save`` of the scripted module, with the archive's random ``serialization_id`` replaced by a
    digest of its other entries (same module, same bytes)."""
    import hashlib
    import struct
    import warnings
    import zipfile

    with warnings.catch_warnings():  # torch.jit is deprecated, but clean-fid's Inception file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
        entry = next(e for e in entries if e.filename.endswith(".data/serialization_id"))
        digest = hashlib.sha256(b"".join(archive.read(e) for e in entries if e is not entry)).hexdigest()
    local = entry.header_offset
    name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
    start = local + 30 + name_length + extra_length
    central = data.find(entry.filename.encode(), start + entry.file_size) - 46
    if (entry.compress_type != zipfile.ZIP_STORED or data[local:local + 4] != b"PK\x03\x04"
            or data[central:central + 4] != b"PK\x01\x02"):
        raise RuntimeError(f"unexpected TorchScript archive layout in {str(path)!r}")
    token = str(int(digest, 16)).rjust(entry.file_size, "0")[-entry.file_size:].encode()
    crc = zipfile.crc32(token)
    data[start:start + entry.file_size] = token
    struct.pack_into("<I", data, central + 16, crc)
    if entry.flag_bits & 0x08:  # CRC in a data descriptor after the data (as torch writes it)
        descriptor = start + entry.file_size
        if data[descriptor:descriptor + 4] != b"PK\x07\x08":
            raise RuntimeError(f"unexpected TorchScript archive layout in {str(path)!r}")
        struct.pack_into("<I", data, descriptor + 4, crc)
    else:
        struct.pack_into("<I", data, local + 14, crc)
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        if archive.testzip() is not None:
            raise RuntimeError(f"rewriting the serialization id broke {str(path)!r}")


def _save_state_dict(module: torch.nn.Module, path: Path, keep=None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items() if keep is None or keep(k)}
    save_file(state, str(path))


def _write_evaluators(folder: Path) -> dict[str, str]:
    import open_clip
    import torchvision

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{OPEN_CLIP_NAME}.json"
    config_path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG, indent=2) + "\n", encoding="utf-8")
    clip_path = folder / "open_clip_model.safetensors"
    _save_state_dict(open_clip.CLIP(**TINY_OPEN_CLIP_CONFIG), clip_path)

    from unlearnkit.metrics.fid import INCEPTION_FILE_NAME

    inception_path = folder / INCEPTION_FILE_NAME
    _save_torchscript(_InceptionStandIn().eval(), inception_path)

    resnet_path = folder / "resnet50.safetensors"
    _save_state_dict(torchvision.models.resnet50(weights=None), resnet_path)
    alexnet_path = folder / "alexnet.safetensors"  # LPIPS reads only the conv trunk: the classifier is left out
    _save_state_dict(torchvision.models.alexnet(weights=None), alexnet_path, keep=lambda k: k.startswith("features."))
    return {"open_clip": str(clip_path), "open_clip_config": str(config_path), "inception": str(inception_path),
            "resnet50": str(resnet_path), "alexnet": str(alexnet_path)}


def _write_coco_images(folder: Path, count: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, (COCO_IMAGE_SIZE, COCO_IMAGE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:012d}.png")


# ----------------------------------------------------------------------------------------------- world


def write_smoke_world(folder: str | os.PathLike, seed: int = 0, coco_images: int = 8) -> dict[str, str]:
    """Write the smoke world under ``folder`` (same ``seed``, same bytes) and return its paths.

    Keys: ``model_path`` (the SD v1.4-layout folder), ``coco_images_dir``, and the ``evaluator_weights`` keys
    ``open_clip``, ``open_clip_config``, ``inception``, ``resnet50``, ``alexnet``. Existing files are overwritten.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(coco_images, bool) or not isinstance(coco_images, int) or coco_images < 2:
        raise ValueError(f"coco_images must be an integer >= 2 (FID needs a covariance), got {coco_images!r}")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    model_folder = folder / MODEL_FOLDER
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = _tiny_sd14_pipeline()
        pipe.save_pretrained(model_folder, safe_serialization=True)
        _write_sd14_layout_index(model_folder)
        torch.manual_seed(seed + 1)
        paths = _write_evaluators(folder / EVALUATOR_FOLDER)
    _write_coco_images(folder / COCO_FOLDER, coco_images, seed)
    return {"model_path": str(model_folder), **paths, "coco_images_dir": str(folder / COCO_FOLDER)}


def main(argv=None) -> dict[str, str]:
    """``python -m unlearnkit.worlds.smoke DIR [--seed N] [--coco-images N]``: write the world, print its paths."""
    parser = argparse.ArgumentParser(prog="python -m unlearnkit.worlds.smoke", description=main.__doc__)
    parser.add_argument("folder", help="where to write the smoke world")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coco-images", type=int, default=8)
    args = parser.parse_args(argv)
    paths = write_smoke_world(args.folder, seed=args.seed, coco_images=args.coco_images)
    print(json.dumps(paths, indent=2))
    print("\nsmoke-test the paper preset with (PROMPT_CSVS: the folder of i2p_4703.csv, coco_30k.csv, "
          "imagenette_prompts.csv):\n" + " ".join(reproduce_command(paths, "PROMPT_CSVS")))
    return paths


def reproduce_command(paths: dict[str, str], data_dir: str) -> list[str]:
    """``unlearnkit reproduce --preset paper --scale smoke …`` on the world :func:`write_smoke_world` wrote."""
    command = ["unlearnkit", "reproduce", "--preset", "paper", "--scale", "smoke", "--device", "cpu",
               "--model-path", paths["model_path"], "--data-dir", str(data_dir),
               "--coco-images", paths["coco_images_dir"]]
    for key, path in paths.items():
        if key not in ("model_path", "coco_images_dir"):
            command += ["--evaluator", f"{key}={path}"]
    return command


if __name__ == "__main__":  # run through the imported module, so TorchScript names its classes after it
    from unlearnkit.worlds.smoke import main as _main

    _main()
