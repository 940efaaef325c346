"""Model definitions of the mini world: a tiny pipeline made of SD v1.4's own diffusers/transformers classes,
and the mini evaluators.

The text encoder width ``d = 128`` and maximum length ``L = 16`` are chosen so that SepME's null space exists
for at least four concepts plus the empty prompt: ``(4 + 1)·L = 80 < d`` (SD v1.4: 77 tokens, 768 dims).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

from unlearnkit.worlds.mini import catalogue as cat
from unlearnkit.worlds.mini.vocab import MAX_LENGTH

TEXT_WIDTH = 128
IMAGE_SIZE = 32
LATENT_SIZE = 8

# SD v1.4's noise schedule; DDIM settings as SD v1.4's scheduler_config.json.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def text_encoder_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                          num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
                          hidden_act="quick_gelu", projection_dim=TEXT_WIDTH, bos_token_id=vocab_size - 2,
                          eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96, 96),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=16,
    )


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=IMAGE_SIZE, layers_per_block=1,
        block_out_channels=(16, 32, 64), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    )


def build_schedulers() -> tuple[DDPMScheduler, DDIMScheduler]:
    ddpm_config = {k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"}
    return DDPMScheduler(**ddpm_config), DDIMScheduler(**SCHEDULER_CONFIG)


def assemble_pipeline(unet, vae, text_encoder, tokenizer) -> StableDiffusionPipeline:
    _, ddim = build_schedulers()
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=ddim, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


# --- evaluators -------------------------------------------------------------------------------------------------
HEADS = {
    "object": len(cat.OBJECTS) + 1,
    "family": len(cat.SUPERCLASSES) + 1,
    "style": len(cat.STYLES) + 1,
    "unsafe": len(cat.UNSAFE_LABELS),
    "hair": len(cat.HAIR_COLOURS) + 1,
    "shirt": len(cat.SHIRT_COLOURS) + 1,
    "backdrop": len(cat.BACKDROPS) + 1,
}
EVALUATORS = {  # evaluator name -> the heads it predicts
    "object_classifier": ("object", "family"),
    "style_classifier": ("style",),
    "unsafe_detector": ("unsafe",),
    "identity_classifier": ("hair", "shirt", "backdrop"),
}


class SmallConvNet(nn.Module):
    """A small CNN classifier for 32×32 images in [0, 1], one linear head per label family."""

    def __init__(self, heads: dict[str, int], width: int = 16):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.ReLU())

        self.features = nn.Sequential(block(3, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2),
                                      block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({name: nn.Linear(2 * width, n) for name, n in heads.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images * 2 - 1)
        return {name: head(h) for name, head in self.heads.items()}


def build_evaluator(name: str) -> SmallConvNet:
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; expected one of {tuple(EVALUATORS)}")
    return SmallConvNet({h: HEADS[h] for h in EVALUATORS[name]})


def build_clip(vocab_size: int) -> CLIPModel:
    """A small contrastive image–text model (CLIP score, and FID features through its image tower)."""
    text = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=MAX_LENGTH, bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    vision = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=4)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))
