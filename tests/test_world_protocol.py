"""Both worlds implement the one declared World interface (the paper world built on the tiny SD-layout model)."""
import inspect

import numpy as np
import pytest

from unlearnkit.worlds import World, load_world
from unlearnkit.worlds.paper_files import MissingFilesError, missing_files
from unlearnkit.worlds.protocol import CONCEPT_KINDS, WORLD_MEMBERS, missing_members
from unlearnkit.worlds.smoke import write_smoke_world


@pytest.fixture(scope="module")
def smoke_files(tmp_path_factory):
    return write_smoke_world(tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="module")
def worlds(smoke_files):
    evaluators = {k: v for k, v in smoke_files.items() if k not in ("model_path", "coco_images_dir")}
    paper = load_world("paper", model_path=smoke_files["model_path"], evaluator_weights=evaluators,
                       coco_images_dir=smoke_files["coco_images_dir"])
    return {"mini": load_world("mini"), "paper": paper}


@pytest.mark.parametrize("name", ["mini", "paper"])
def test_each_world_implements_every_member_of_the_protocol(worlds, name):
    world = worlds[name]
    assert missing_members(world) == []
    assert isinstance(world, World)
    for member in WORLD_MEMBERS:
        declared = inspect.getattr_static(World, member, None)
        if callable(declared) and not isinstance(declared, property):
            assert callable(getattr(world, member)), f"{name}.{member} is not callable"


@pytest.mark.parametrize("name", ["mini", "paper"])
def test_catalogue_probes_and_evaluators_answer_on_generated_images(worlds, name):
    world = worlds[name]
    for kind in CONCEPT_KINDS:
        names = world.concepts(kind)
        assert names, f"{name} has no {kind} concept"
        assert world.concept(names[0]).kind == kind
    probes = world.default_probes()
    assert {world.concept(c).kind for _, c in probes} >= {"object", "style", "identity", "unsafe"}
    side = world.pipe.unet.config.sample_size * world.pipe.vae_scale_factor   # the world's image size
    images = np.random.default_rng(0).integers(0, 255, (2, side, side, 3), dtype=np.uint8)
    for _, concept in probes:
        hits = world.detect(concept, images)
        assert hits.shape == (2,) and hits.dtype == bool
    features = world.image_features(images)
    assert features.shape[0] == 2 and np.isfinite(features).all()
    assert world.clip_score(images, ["a photo", "a cat"]).shape == (2,)
    erase, preserve = world.identity_split()
    assert erase and preserve and not set(erase) & set(preserve)
    assert len(world.evaluation_prompts(world.object_classes()[0], 3, 7)) == 3


def test_paper_world_reads_the_package_lists_and_anchors_every_family(worlds):
    paper = worlds["paper"]
    assert len(paper.identity_split()[0]) == 100 and len(paper.style_split()[1]) == 100
    van_gogh = paper.concept("Van Gogh")
    assert van_gogh.kind == "style" and van_gogh.anchor_prompts      # AC has an anchor for the paper styles
    person = paper.concept(paper.identity_split()[0][0])
    assert person.kind == "identity" and person.anchor == "a person"
    assert paper.skipped_metrics() == {}
    record = paper.files_record()
    assert set(record["evaluators"]) >= {"open_clip", "resnet50"}


def test_missing_files_are_listed_all_at_once_before_any_model_loads(tmp_path):
    missing = missing_files(("open_clip", "resnet50", "i2p", "coco_images"), model_path=tmp_path / "nothing",
                            data_dir=tmp_path, evaluator_weights={"resnet50": str(tmp_path / "r50.pth")})
    text = "\n".join(missing)
    assert len(missing) == 4 and "open_clip" in text and "r50.pth" in text and "i2p_4703.csv" in text
    with pytest.raises(MissingFilesError, match="resnet50"):
        load_world("paper", model_path=tmp_path / "nothing", needs=("resnet50",))


def test_erase_and_export_work_on_an_sd_layout_folder(smoke_files, tmp_path):
    from diffusers import StableDiffusionPipeline

    from unlearnkit import cli
    from unlearnkit.core.edits import Edit

    model = smoke_files["model_path"]
    assert cli.main(["erase", "--method", "esd-x", "--concept", "tench", "--model", model, "--set", "iterations=2",
                     "--set", "num_inference_steps=4", "--out", str(tmp_path / "edit")]) == 0
    edit = Edit.load(tmp_path / "edit" / "edit.safetensors")
    assert edit.deltas and all(name.startswith(("down_blocks", "mid_block", "up_blocks")) for name in edit.deltas)
    assert cli.main(["export", str(tmp_path / "edit" / "edit.safetensors"), "--model", model, "--format", "diffusers",
                     "--out", str(tmp_path / "erased")]) == 0
    erased = StableDiffusionPipeline.from_pretrained(tmp_path / "erased").unet.state_dict()
    original = StableDiffusionPipeline.from_pretrained(model).unet.state_dict()
    name = next(iter(edit.deltas))
    assert np.allclose(erased[name].numpy(), (original[name] + edit.deltas[name]).numpy(), atol=1e-6)
