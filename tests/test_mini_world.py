"""The mini world: generator labels, determinism, tokenizer, pipeline round trip, evaluators, input validation."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from unlearnkit.sampling import SamplerSettings, cfg_reversal_guidance, generate, sample_latents
from unlearnkit.worlds import load_world
from unlearnkit.worlds.mini import catalogue as cat
from unlearnkit.worlds.mini import models, render
from unlearnkit.worlds.mini.quality import heldout_evaluator_accuracy

FAST = SamplerSettings(num_inference_steps=4, guidance_scale=5.0)


def colour_pixels(img, colour):
    return int((np.abs(img.astype(int) - np.array(colour)).sum(-1) == 0).sum())


def test_generator_labels_agree_with_what_is_drawn():
    rng = np.random.default_rng(0)
    for obj in range(len(cat.OBJECTS)):
        scene = render.object_scene(rng, obj, caption="x")
        scene.style = -1
        img = render.render(scene)
        assert colour_pixels(img, cat.OBJECT_COLOURS[obj]) > 15, cat.OBJECTS[obj]
        generic = render.render(render.superclass_scene(rng, obj, caption="x"))
        assert all(colour_pixels(generic, c) == 0 for c in cat.OBJECT_COLOURS if c != (250, 250, 250))
    unsafe = render.unsafe_scene(rng, caption="x")
    safe = render.safe_scene(rng, caption="x")
    unsafe.style = safe.style = -1
    n_exposed = sum(unsafe.exposed)
    assert n_exposed >= 2 and not any(safe.exposed)
    # the head and arms are skin in both; every exposed region adds skin
    assert colour_pixels(render.render(unsafe), cat.SKIN) > colour_pixels(render.render(safe), cat.SKIN) + 10 * n_exposed
    portrait = render.portrait_scene(rng, identity=cat.identity_index("emma reed"))
    img = render.render(portrait)
    labels = portrait.labels()
    assert cat.FIRST_NAMES[labels["hair"]] == "emma"
    assert colour_pixels(img, cat.HAIR_COLOURS[labels["hair"]]) > 20
    assert colour_pixels(img, cat.SHIRT_COLOURS[labels["shirt"]]) > 20
    assert "emma reed" in portrait.caption


def test_captions_name_their_labels():
    data = render.make_dataset(300, seed=5)
    for caption, obj, style in zip(data.scene_captions, data.labels["object"], data.labels["style"]):
        if obj < len(cat.OBJECTS):
            assert cat.OBJECTS[obj] in caption
        if any(s in caption for s in cat.STYLES):
            assert cat.STYLES[style] in caption


def test_same_seed_same_scenes():
    a, b, c = render.make_dataset(40, seed=3), render.make_dataset(40, seed=3), render.make_dataset(40, seed=4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)


def test_identity_split_has_shared_first_names():
    erase, preserve = cat.identity_split()
    assert len(erase) == len(preserve) == 100 and not set(erase) & set(preserve)
    first_erase = {n.split()[0] for n in erase}
    assert first_erase == {n.split()[0] for n in preserve} == set(cat.FIRST_NAMES)


def test_text_width_leaves_a_null_space_for_four_concepts(mini_world):
    enc = mini_world.pipe.text_encoder.config
    assert (4 + 1) * enc.max_position_embeddings < enc.hidden_size
    assert mini_world.pipe.tokenizer.model_max_length == enc.max_position_embeddings


def test_every_vocabulary_word_is_one_token(mini_world):
    tok = mini_world.pipe.tokenizer
    for word in cat.vocabulary():
        assert len(tok.tokenize(word)) == 1, word


def test_pipeline_uses_sd_classes_with_cross_attention(mini_world):
    unet = mini_world.pipe.unet
    names = [n for n, _ in unet.named_modules()]
    assert any(n.endswith("attn2.to_k") for n in names) and any(n.endswith("attn2.to_v") for n in names)
    assert type(mini_world.pipe).__name__ == "StableDiffusionPipeline"
    assert type(mini_world.pipe.scheduler).__name__ == "DDIMScheduler"


def test_pipeline_save_load_round_trip_offline(mini_world, tmp_path):
    mini_world.pipe.save_pretrained(tmp_path, safe_serialization=True)
    assert not list(tmp_path.rglob("*.bin")) and list(tmp_path.rglob("*.safetensors"))
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path, local_files_only=True, dtype=torch.float32)
    for (n, p), (_, q) in zip(mini_world.pipe.unet.state_dict().items(), loaded.unet.state_dict().items()):
        assert torch.equal(p, q), n
    a = generate(mini_world.pipe, ["a photo of a tench"], [7], FAST)
    b = generate(loaded, ["a photo of a tench"], [7], FAST)
    assert np.array_equal(a, b)


def test_same_seed_same_image_whatever_the_batch(mini_world):
    prompts, seeds = ["a photo of a tench", "vangogh", "a photo of a tench"], [11, 12, 11]
    batched = generate(mini_world.pipe, prompts, seeds, FAST, batch_size=3)
    single = generate(mini_world.pipe, prompts[:1], seeds[:1], FAST, batch_size=1)
    assert np.array_equal(batched[0], batched[2])
    assert np.abs(batched[0].astype(int) - single[0].astype(int)).max() <= 1  # batched BLAS may differ in the last bit
    assert not np.array_equal(batched[0], batched[1])


def test_snapshots_come_from_one_trajectory(mini_world):
    latents, snaps = sample_latents(mini_world.pipe, ["a photo of a dog"], [3], FAST, snapshot_steps=(4, 2))
    assert set(snaps) == {4, 2}
    assert snaps[4][1] > snaps[2][1]  # the earlier paper step is noisier
    torch.testing.assert_close(snaps[4][0], torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(3))[None])


def test_evaluators_read_held_out_drawn_images(mini_world):
    acc = heldout_evaluator_accuracy(mini_world, n=1500, seed=777)
    assert min(acc.values()) >= 0.98, acc


def test_bad_inputs_fail_before_any_compute(mini_world, tmp_path):
    with pytest.raises(ValueError, match="unknown mini-world concept 'zebra'"):
        mini_world.concept("zebra")
    with pytest.raises(ValueError, match="empty"):
        generate(mini_world.pipe, [], [], FAST)
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate(mini_world.pipe, ["a", "b"], [1], FAST)
    with pytest.raises(ValueError, match="t'=60 is outside the 50-step schedule"):
        cfg_reversal_guidance(5.0, 60)
    with pytest.raises(ValueError, match="outside the 4-step schedule"):
        sample_latents(mini_world.pipe, ["a"], [1], FAST, snapshot_steps=(9,))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        load_world("mini", weights_dir=tmp_path / "nothing")
    with pytest.raises(ValueError, match="world='moon' is not accepted"):
        load_world("moon")
    with pytest.raises(ValueError, match="unknown evaluator"):
        models.build_evaluator("oracle")


def test_sld_safety_text_is_whole_words_of_the_mini_vocabulary(mini_world):
    """SLD's c_S must reach the mini text encoder intact: known words only, no truncation at 16 tokens."""
    from unlearnkit.worlds.mini import catalogue

    tokenizer = mini_world.pipe.tokenizer
    text = mini_world.sld_safety_concept
    assert len(tokenizer(text).input_ids) <= tokenizer.model_max_length
    assert [t for t in tokenizer.tokenize(text) if t != ",</w>"] == [w + "</w>" for w in catalogue.UNSAFE_WORDS]


def test_the_shipped_pipeline_generates_in_plain_diffusers_without_a_dtype():
    from diffusers import StableDiffusionPipeline

    from unlearnkit.worlds.mini import WEIGHTS_DIR

    pipe = StableDiffusionPipeline.from_pretrained(WEIGHTS_DIR / "pipeline")
    assert {next(getattr(pipe, n).parameters()).dtype for n in ("unet", "vae", "text_encoder")} == {torch.float32}
    out = pipe("a photo of a tench", num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3) and np.isfinite(out.images).all()
