"""The smoke world: SD v1.4's folder layout with tiny random weights, and each evaluator stand-in through its real
loader (all offline, on a CPU)."""
import hashlib
import inspect
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnkit.worlds import smoke

SD14_ENTRIES = {"model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler", "safety_checker",
                "feature_extractor"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return smoke.write_smoke_world(tmp_path_factory.mktemp("smoke"), seed=0)


def file_hashes(folder) -> dict[str, str]:
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def random_images(n, seed=0, size=64):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --- the SD v1.4 folder ------------------------------------------------------------------------------------------
def test_folder_layout_and_model_index_are_sd14s(world):
    from diffusers import StableDiffusionPipeline
    from diffusers.schedulers import KarrasDiffusionSchedulers

    folder = Path(world["model_path"])
    assert {p.name for p in folder.iterdir()} == SD14_ENTRIES
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    # the pipeline's component classes; image_encoder (IP-Adapter) came after SD v1.4, whose folder has none
    signature = inspect.signature(StableDiffusionPipeline.__init__).parameters
    expected = {name: p.annotation.__name__ for name, p in signature.items()
                if name not in ("self", "image_encoder", "requires_safety_checker")}
    assert expected.pop("scheduler") == "KarrasDiffusionSchedulers"
    assert "PNDMScheduler" in KarrasDiffusionSchedulers.__members__
    expected["scheduler"] = "PNDMScheduler"  # what SD v1.4's folder ships
    assert {k: v[1] for k, v in index.items() if not k.startswith("_")} == expected
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == (0.00085, 0.012,
                                                                                            "scaled_linear")
    assert scheduler["skip_prk_steps"] and scheduler["steps_offset"] == 1 and not scheduler["set_alpha_to_one"]
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt*"))
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 30e6


def test_plain_diffusers_loads_it_in_float32_and_generates_128px(world):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(world["model_path"])
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert type(pipe.safety_checker).__name__ == "StableDiffusionSafetyChecker"
    for name in ("unet", "vae", "text_encoder", "safety_checker"):
        assert {p.dtype for p in getattr(pipe, name).parameters()} == {torch.float32}, name
    out = pipe("a photo of a cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               output_type="np")
    assert out.images.shape == (1, 128, 128, 3) and np.isfinite(out.images).all()


def test_load_sd14_swaps_in_ddim(world):
    from unlearnkit.worlds.paper import load_sd14

    pipe = load_sd14(world["model_path"])
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.steps_offset == 1 and pipe.scheduler.config.beta_end == 0.012
    assert pipe.unet.config.sample_size == 16 and pipe.unet.dtype == torch.float32


def test_parameter_names_are_sd14s(world):
    """Names (not shapes) of the tiny UNet and VAE equal those of build_sd14_architecture()'s, built on the meta
    device (no memory, no weights drawn)."""
    from unlearnkit.worlds.paper import build_sd14_architecture, load_sd14

    with torch.device("meta"):
        real = build_sd14_architecture(sample_size=8, device="meta")
    tiny = load_sd14(world["model_path"])
    for name in ("unet", "vae"):
        assert list(getattr(tiny, name).state_dict()) == list(getattr(real, name).state_dict()), name
    assert type(tiny.text_encoder) is type(real.text_encoder) and type(tiny.tokenizer) is type(real.tokenizer)
    assert tiny.tokenizer("a cat").input_ids == real.tokenizer("a cat").input_ids


def test_same_seed_writes_the_same_bytes_and_the_cli_prints_the_paths(world, tmp_path, capsys):
    paths = smoke.main([str(tmp_path), "--seed", "0"])
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.index("\n}\n") + 2]) == paths
    assert " ".join(smoke.reproduce_command(paths, "PROMPT_CSVS")) in printed
    assert set(paths) == set(world) == {"model_path", "coco_images_dir", *smoke.SMOKE_EVALUATOR_KEYS}
    first = file_hashes(Path(world["model_path"]).parent)
    assert first == file_hashes(tmp_path) and len(first) > 20


def test_returned_keys_are_the_paper_worlds():
    from unlearnkit.worlds.paper_files import EVALUATOR_FILES, OPTIONAL_EVALUATOR_KEYS

    assert set(smoke.SMOKE_EVALUATOR_KEYS) <= set(EVALUATOR_FILES) | set(OPTIONAL_EVALUATOR_KEYS)


# --- the evaluators, through their real loaders -------------------------------------------------------------------
def test_open_clip_stand_in_scores_images(world):
    from unlearnkit.metrics import OpenCLIPScorer

    scorer = OpenCLIPScorer(world["open_clip"], model_config=world["open_clip_config"])
    images, prompts = random_images(2), ["a photo of a cat", "a painting"]
    image, text = scorer.image_features(images), scorer.text_features(prompts)
    assert image.shape == text.shape == (2, 32)
    assert np.allclose(np.linalg.norm(image, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    scores = scorer.score(images, prompts)
    assert scores.shape == (2,) and np.allclose(scores, 100 * (image * text).sum(-1), atol=1e-4)


def test_inception_stand_in_gives_2048_features_through_clean_fid(world):
    from unlearnkit.metrics import InceptionFeatureExtractor, image_features

    extractor = InceptionFeatureExtractor(world["inception"])
    from_folder = image_features(world["coco_images_dir"], extractor)
    assert from_folder.shape == (8, 2048) and np.isfinite(from_folder).all()
    from PIL import Image

    coco = np.stack([np.asarray(Image.open(p)) for p in sorted(Path(world["coco_images_dir"]).glob("*.png"))])
    assert coco.shape == (8, 64, 64, 3)
    assert np.allclose(image_features(coco, extractor), from_folder, atol=1e-4)


def test_resnet50_stand_in_predicts(world):
    from unlearnkit.metrics import ResNet50Classifier

    classifier = ResNet50Classifier(world["resnet50"])
    predicted = classifier.predict(random_images(2))
    assert len(predicted) == 2 and all(p in classifier.categories for p in predicted)


def test_alexnet_stand_in_measures_lpips(world):
    from unlearnkit.metrics import AlexNetLPIPS

    backend = AlexNetLPIPS(world["alexnet"])
    a, b = random_images(2, seed=1), random_images(2, seed=2)
    assert np.allclose(backend.distances(a, a), 0, atol=1e-6)
    distances = backend.distances(a, b)
    assert distances.shape == (2,) and (distances > 0).all()


class _MakesAFolder:
    """Unpickling this would create ``path`` (stands for arbitrary code execution)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_a_pickle_renamed_safetensors_is_refused_without_running_it(world, tmp_path):
    from unlearnkit.core.errors import BadFileError
    from unlearnkit.metrics import AlexNetLPIPS, OpenCLIPScorer, ResNet50Classifier

    marker = tmp_path / "code-ran"
    payload = pickle.dumps({"weight": _MakesAFolder(marker)}, protocol=2)
    loaders = {"resnet50.safetensors": ResNet50Classifier, "alexnet.safetensors": AlexNetLPIPS,
               "open_clip_model.safetensors": lambda p: OpenCLIPScorer(p, model_config=world["open_clip_config"])}
    for name, load in loaders.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(BadFileError, match="not safetensors: refused for safety"):
            load(tmp_path / name)
    (tmp_path / "resnet50.pth").write_bytes(payload)
    with pytest.raises(BadFileError, match="refused for safety"):  # .pth files are read weights-only
        ResNet50Classifier(tmp_path / "resnet50.pth")
    assert not marker.exists()
