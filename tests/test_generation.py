"""Cached, resumable, shardable generation (unlearnkit.sampling.cache) on the shipped mini world, 4 DDIM steps."""
import copy
import logging
import os

import numpy as np
import pytest
import torch

import unlearnkit.sampling.cache as generation
from unlearnkit.sampling.cache import (cache_path, default_shard, generate_cached, image_key, image_keys,
                                   load_cached_images, missing_items, model_fingerprint, read_cached_image,
                                   shard_items)
from unlearnkit.sampling import SamplerSettings, cfg_reversal_guidance
from unlearnkit.worlds.mini import WEIGHTS_DIR

SHIPPED_MODEL_INDEX = WEIGHTS_DIR / "pipeline" / "model_index.json"
FAST = SamplerSettings(num_inference_steps=4, guidance_scale=5.0)
PROMPTS = ["a photo of a cat", "a photo of a dog", "a red ball", "a blue cube", "a painting of a house", "a tree"]
SEEDS = [11, 12, 13, 14, 15, 16]


@pytest.fixture
def world(request):
    """The shipped mini world; skipped (not failed) while its weights are still being trained."""
    if not SHIPPED_MODEL_INDEX.is_file():
        pytest.skip(f"shipped mini-world weights not found at {SHIPPED_MODEL_INDEX}")
    return request.getfixturevalue("mini_world")


@pytest.fixture
def unet_calls(world, monkeypatch):
    """Counts UNet forward calls of the world's pipeline during one test."""
    calls = []
    forward = world.pipe.unet.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(world.pipe.unet, "forward", counting_forward)
    return calls


@pytest.fixture
def generated_items(monkeypatch):
    """Records the (prompt, seed) pairs each batch generates; ``fail_on_batch`` makes that batch raise (a kill)."""
    record = {"batches": [], "fail_on_batch": None}
    real_generate = generation.generate

    def recording_generate(pipe, prompts, seeds, *args, **kwargs):
        record["batches"].append(set(zip(prompts, seeds)))
        if record["fail_on_batch"] == len(record["batches"]):
            raise KeyboardInterrupt("simulated kill")
        return real_generate(pipe, prompts, seeds, *args, **kwargs)

    monkeypatch.setattr(generation, "generate", recording_generate)
    return record


def cached(world, cache_dir, prompts=PROMPTS, seeds=SEEDS, **kwargs):
    kwargs.setdefault("batch_size", 4)
    return generate_cached(world.pipe, prompts, seeds, FAST, cache_dir, embeddings=world.embeddings,
                           progress=False, **kwargs)


def test_cache_hit_generates_nothing_and_returns_identical_images(world, unet_calls, tmp_path):
    first = cached(world, tmp_path)
    assert first.shape == (len(PROMPTS), 32, 32, 3) and first.dtype == np.uint8
    assert len(unet_calls) > 0
    unet_calls.clear()
    second = cached(world, tmp_path)
    assert unet_calls == []
    np.testing.assert_array_equal(first, second)
    index_lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert len(index_lines) == len(PROMPTS)


def test_resume_after_kill_redoes_nothing_and_matches_uninterrupted_run(world, generated_items, tmp_path):
    generated_items["fail_on_batch"] = 2
    with pytest.raises(KeyboardInterrupt):
        cached(world, tmp_path / "killed", batch_size=2)
    first_batch = generated_items["batches"][0]
    keys = image_keys(PROMPTS, SEEDS, FAST, model_fingerprint(world.pipe))
    assert missing_items(tmp_path / "killed", keys) == [2, 3, 4, 5]
    assert not list((tmp_path / "killed").rglob("*.tmp"))

    generated_items["fail_on_batch"] = None
    generated_items["batches"].clear()
    resumed = cached(world, tmp_path / "killed", batch_size=2)
    regenerated = set().union(*generated_items["batches"])
    assert regenerated == set(zip(PROMPTS[2:], SEEDS[2:])) and not regenerated & first_batch

    uninterrupted = cached(world, tmp_path / "clean", batch_size=2)
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_two_shards_merge_to_the_single_process_result(world, unet_calls, tmp_path, caplog):
    single = cached(world, tmp_path / "single")
    with caplog.at_level(logging.WARNING, logger="unlearnkit.sampling.cache"):
        assert cached(world, tmp_path / "sharded", shard=(0, 2)) is None
    assert "3 of 6" in caplog.text
    cached(world, tmp_path / "sharded", shard=(1, 2))
    unet_calls.clear()
    merged = cached(world, tmp_path / "sharded")
    assert unet_calls == []
    np.testing.assert_array_equal(merged, single)
    keys = image_keys(PROMPTS, SEEDS, FAST, model_fingerprint(world.pipe))
    np.testing.assert_array_equal(load_cached_images(tmp_path / "sharded", keys), single)


def test_truncated_png_is_regenerated(world, generated_items, tmp_path):
    original = cached(world, tmp_path)
    keys = image_keys(PROMPTS, SEEDS, FAST, model_fingerprint(world.pipe))
    damaged = cache_path(tmp_path, keys[3])
    damaged.write_bytes(damaged.read_bytes()[:40])
    assert read_cached_image(damaged) is None
    generated_items["batches"].clear()
    repaired = cached(world, tmp_path)
    assert set().union(*generated_items["batches"]) == {(PROMPTS[3], SEEDS[3])}
    np.testing.assert_array_equal(repaired, original)
    assert read_cached_image(damaged) is not None


def test_changed_weights_change_fingerprint_and_miss_the_cache(world, tmp_path):
    original_fingerprint = model_fingerprint(world.pipe)
    cached(world, tmp_path)
    edited = copy.deepcopy(world.pipe)
    with torch.no_grad():
        next(edited.unet.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(edited) != original_fingerprint
    assert model_fingerprint(world.pipe) == original_fingerprint
    calls = []
    forward = edited.unet.forward
    edited.unet.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    generate_cached(edited, PROMPTS, SEEDS, FAST, tmp_path, embeddings=world.embeddings, progress=False)
    assert calls, "the edited model must not be served the original model's images"


def test_toggling_a_lora_adapter_changes_the_fingerprint(world):
    from peft import LoraConfig

    pipe = copy.deepcopy(world.pipe)
    pipe.unet.add_adapter(LoraConfig(r=2, target_modules=["to_k", "to_v"], init_lora_weights=False))
    enabled = model_fingerprint(pipe)
    pipe.unet.disable_adapters()
    assert model_fingerprint(pipe) != enabled
    pipe.unet.enable_adapters()
    assert model_fingerprint(pipe) == enabled


def test_repeated_prompt_seed_pairs_are_generated_once(world, generated_items, tmp_path):
    images = cached(world, tmp_path, prompts=["a red ball"] * 3, seeds=[5, 5, 5])
    assert generated_items["batches"] == [{("a red ball", 5)}]
    np.testing.assert_array_equal(images[0], images[2])


def _bad_call_cases(tmp_path):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    return [
        (dict(prompts=[]), ValueError, "prompts is empty"),
        (dict(prompts="a cat", seeds=[1]), TypeError, "'a cat'"),
        (dict(seeds=SEEDS[:2]), ValueError, "6 prompts but 2 seeds"),
        (dict(shard=(2, 2)), ValueError, r"shard=\(2, 2\)"),
        (dict(shard=(0, 0)), ValueError, r"shard=\(0, 0\)"),
        (dict(shard="0/2"), ValueError, "'0/2'"),
        (dict(cache_dir=not_a_dir), NotADirectoryError, "file.txt"),
        (dict(guidance=cfg_reversal_guidance(5.0, 2, 4)), ValueError, "guidance_id=None"),
        (dict(guidance_id="cfg-reversal"), ValueError, "'cfg-reversal'"),
        (dict(batch_size=0), ValueError, r"batch_size=0 is out of range: expected an integer in \[1, 4096\]"),
    ]


def test_bad_inputs_raise_before_any_unet_call(world, unet_calls, tmp_path):
    for overrides, error, message in _bad_call_cases(tmp_path):
        kwargs = dict(prompts=PROMPTS, seeds=SEEDS, cache_dir=tmp_path / "cache") | overrides
        with pytest.raises(error, match=message):
            generate_cached(world.pipe, kwargs.pop("prompts"), kwargs.pop("seeds"), FAST, kwargs.pop("cache_dir"),
                            progress=False, **kwargs)
    assert unet_calls == []


def test_keys_separate_everything_an_image_depends_on():
    base = image_key("model-a", "a cat", 1, FAST)
    assert base == image_key("model-a", "a cat", 1, FAST)
    variants = [image_key("model-b", "a cat", 1, FAST), image_key("model-a", "a dog", 1, FAST),
                image_key("model-a", "a cat", 2, FAST), image_key("model-a", "a cat", 1, SamplerSettings()),
                image_key("model-a", "a cat", 1, FAST, guidance_id="cfg-reversal:t'=43")]
    assert len({base, *variants}) == 6


def test_shards_partition_the_input_by_position(monkeypatch):
    items = list(range(7))
    parts = [shard_items(items, (k, 3)) for k in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    for name in ["WORLD_SIZE", *[k for k in os.environ if k.startswith("ACCELERATE_")]]:
        monkeypatch.delenv(name, raising=False)
    assert default_shard() == (0, 1)
