"""The paper world: SD v1.4 configs, offline CLIP tokenizer, architecture build and weight loading."""
import pytest
import torch

from unlearnkit.worlds.paper import (
    SD14_TEXT_CONFIG,
    SD14_UNET_CONFIG,
    SD14_VAE_CONFIG,
    PaperWorld,
    clip_tokenizer_from_open_clip,
    load_sd14,
)

PROMPTS = [
    "a photo of a cat",
    "Van Gogh's Starry Night, oil painting!!",
    "A  NUDE   person on the beach, 4k",
    "naïve café 123 — ok?",
    "",
]
START, END = 49406, 49407


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer_from_open_clip()


def test_sd14_configs_are_the_released_ones():
    assert SD14_UNET_CONFIG["block_out_channels"] == [320, 640, 1280, 1280]
    assert SD14_UNET_CONFIG["cross_attention_dim"] == 768 and SD14_UNET_CONFIG["sample_size"] == 64
    assert SD14_UNET_CONFIG["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert SD14_UNET_CONFIG["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert SD14_VAE_CONFIG["block_out_channels"] == [128, 256, 512, 512]
    assert SD14_VAE_CONFIG["latent_channels"] == 4 and SD14_VAE_CONFIG["scaling_factor"] == 0.18215
    assert SD14_TEXT_CONFIG["vocab_size"] == 49408 and SD14_TEXT_CONFIG["hidden_act"] == "quick_gelu"
    assert (SD14_TEXT_CONFIG["hidden_size"], SD14_TEXT_CONFIG["num_hidden_layers"]) == (768, 12)


def test_tokenizer_matches_open_clip(tokenizer):
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()(PROMPTS + ["a very long prompt " * 30]).tolist()
    ours = tokenizer(PROMPTS + ["a very long prompt " * 30], padding="max_length", max_length=77,
                     truncation=True).input_ids
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    for prompt, ids, reference_ids in zip(PROMPTS, ours, reference):
        assert len(ids) == 77, prompt
        length = reference_ids.index(END) + 1
        assert ids[:length] == reference_ids[:length], prompt
        assert ids[0] == START and set(ids[length:]) <= {END}  # SD v1.4 pads with <|endoftext|>
    assert ours[-1] == reference[-1]  # truncated: 75 tokens between start and end, no padding


def test_built_pipeline_is_sd14(sd14_pipe):
    assert sd14_pipe.unet.config.sample_size == 16
    assert list(sd14_pipe.unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert sd14_pipe.vae.config.scaling_factor == 0.18215 and sd14_pipe.vae.config.sample_size == 512
    assert sd14_pipe.text_encoder.config.max_position_embeddings == 77
    assert sd14_pipe.safety_checker is None and sd14_pipe.feature_extractor is None
    scheduler = sd14_pipe.scheduler
    assert type(scheduler).__name__ == "DDIMScheduler"
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.steps_offset == 1
    assert not scheduler.config.clip_sample and not scheduler.config.set_alpha_to_one
    with torch.no_grad():
        hidden = sd14_pipe.text_encoder(sd14_pipe.tokenizer(["a cat"], padding="max_length",
                                                            return_tensors="pt").input_ids)[0]
    assert hidden.shape == (1, 77, 768)


@pytest.fixture
def no_pipeline_building(monkeypatch):
    """Fail the test if load_sd14 gets as far as building a pipeline."""
    from diffusers import StableDiffusionPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("load_sd14 started building a pipeline before checking its path")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", refuse)


def test_load_sd14_missing_folder(tmp_path, no_pipeline_building):
    missing = tmp_path / "stable-diffusion-v1-4"
    with pytest.raises(FileNotFoundError, match="hf download") as error:
        load_sd14(missing)
    assert str(missing) in str(error.value)


def test_load_sd14_folder_without_unet_weights(tmp_path, no_pipeline_building):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline folder"):
        load_sd14(str(tmp_path))
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="No UNet weights") as error:
        load_sd14(str(tmp_path))
    assert str(tmp_path / "unet") in str(error.value)


def test_load_sd14_hub_id_when_offline(monkeypatch, no_pipeline_building):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="CompVis/stable-diffusion-v1-4.*HF_HUB_OFFLINE"):
        load_sd14("CompVis/stable-diffusion-v1-4")


def test_load_sd14_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model_path"):
        load_sd14(14)
    with pytest.raises(ValueError, match="empty"):
        load_sd14("")
    with pytest.raises(TypeError, match="dtype"):
        load_sd14("x", dtype="float16")


def _tiny_pipeline():
    """Same classes as SD v1.4 at toy width, with SD v1.4's PNDM scheduler (load_sd14 must swap in DDIM)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=8)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=2, vocab_size=49408))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer_from_open_clip(),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def test_load_sd14_from_a_local_folder(tmp_path):
    saved = _tiny_pipeline()
    saved.save_pretrained(tmp_path)
    world = PaperWorld.load(tmp_path)
    assert world.name == "paper" and world.evaluator_weights == {} and world.model_path == str(tmp_path)
    pipe = world.pipe
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear" and pipe.scheduler.config.steps_offset == 1
    assert pipe.safety_checker is None
    for name, param in saved.unet.state_dict().items():
        assert torch.equal(param, pipe.unet.state_dict()[name]), name



def test_a_folder_whose_unet_is_bin_and_the_rest_safetensors_loads(tmp_path):
    saved = _tiny_pipeline()
    saved.save_pretrained(tmp_path)
    unet = tmp_path / "unet"
    state = saved.unet.state_dict()
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(state, unet / "diffusion_pytorch_model.bin")
    world = PaperWorld.load(tmp_path)
    for name, param in state.items():
        assert torch.equal(param, world.pipe.unet.state_dict()[name]), name
