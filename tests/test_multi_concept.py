"""Multi-concept baselines (ANT Tables 2–3 rows): joint concepts, FMN over several texts, erase on a list, SLD rows."""
import numpy as np
import pytest
import torch

from unlearnkit import methods

from unlearnkit.experiments import baselines

from unlearnkit.sampling import sld
from unlearnkit.core.concepts import Concept, joint
from unlearnkit.experiments.evaluation import generate_edited
from unlearnkit.methods import ablating, fmn
from unlearnkit.sampling import SamplerSettings

FOUR_STEPS = SamplerSettings(num_inference_steps=4, guidance_scale=5.0)


def test_joint_interleaves_prompts_and_keeps_paired_anchors_paired():
    a = Concept("tench", ("a tench", "tench photo"), anchor="fish", anchor_prompts=("a fish", "fish photo"))
    b = Concept("church", ("a church", "church photo", "old church"), anchor="building",
                anchor_prompts=("a building", "building photo", "old building"))
    both = joint([a, b])
    assert both.prompts == ("a tench", "a church", "tench photo", "church photo", "old church")
    assert both.anchor_prompts == ("a fish", "a building", "fish photo", "building photo", "old building")
    assert both.name == "tench, church" and both.label is None and both.anchor == ""
    # every caption keeps its own anchor: AC pairs them by index
    generator = torch.Generator().manual_seed(0)
    for caption, anchor in zip(both.prompts, both.anchor_prompts):
        assert ablating.concept_prompt_for(both, both.anchor_prompts, anchor, generator) == caption
    assert joint([a]) is a
    with pytest.raises(ValueError, match="non-empty list"):
        joint([])


def test_joint_of_unpaired_concepts_takes_the_union_of_anchor_prompts_and_ac_draws_from_the_shared_anchor():
    people = [Concept(n, (f"a portrait of {n}", n, f"a photo of {n}"), anchor="a person", kind="identity",
                      anchor_prompts=("a portrait of a person", "a photo of a person")) for n in ("anna adams", "bo li")]
    both = joint(people)
    assert both.anchor_prompts == ("a portrait of a person", "a photo of a person")
    assert both.anchor == "a person" and both.kind == "identity"
    assert both.prompts[:2] == ("a portrait of anna adams", "a portrait of bo li")   # a prefix covers both
    # shared anchors paired with several captions: AC draws one of the captions paired with it
    shared = Concept("x, y", ("x one", "y one"), anchor_prompts=("thing", "thing"))
    drawn = {ablating.concept_prompt_for(shared, shared.anchor_prompts, "thing", torch.Generator().manual_seed(s))
             for s in range(20)}
    assert drawn == {"x one", "y one"}


def test_fmn_masks_each_prompt_at_the_tokens_of_the_text_it_names(mini_world):
    tokenizer = mini_world.pipe.tokenizer
    prompts = ["a photo of a tench", "a church at night"]
    masks = fmn.concept_token_masks(tokenizer, prompts, ["tench", "church"], use_pooler=False)
    for row, prompt, text in zip(masks, prompts, ["tench", "church"]):
        expected = fmn.concept_token_masks(tokenizer, [prompt], text, use_pooler=False)[0]
        assert torch.equal(row, expected) and row.sum() >= 1
    assert fmn.prompts_naming(tokenizer, prompts + ["a dog"], ["tench", "church"]) == prompts
    with pytest.raises(ValueError, match="contain none of the concept texts"):
        fmn.concept_token_masks(tokenizer, ["a dog"], ["tench", "church"])
    with pytest.raises(ValueError, match="concept_text"):
        fmn.concept_token_masks(tokenizer, prompts, [])


def test_erase_many_trains_once_on_all_concepts_and_leaves_the_world_unchanged(mini_world):
    unet = mini_world.pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    concepts = [mini_world.concept("tench"), mini_world.concept("church")]
    erasure = methods.erase("fmn", mini_world, concepts, iterations=2, concept_images=2, lr=1e-4, sampler=FOUR_STEPS)
    assert len(erasure.log) == 2 and erasure.edit.num_changed() > 0
    assert erasure.edit.metadata["concept_text"] == ["tench", "church"]
    esd_edit = methods.erase("esd-x", mini_world, concepts, iterations=1, num_inference_steps=4).edit
    assert esd_edit.metadata["concept"] == "tench, church"
    uce_edit = methods.erase_many("uce", mini_world, concepts).edit
    assert uce_edit.metadata["concepts"] == ["tench", "church"]
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    with pytest.raises(ValueError, match="does not erase several concepts"):
        methods.erase("ant", mini_world, concepts)
    with pytest.raises(ValueError, match="concepts is empty"):
        methods.erase("esd-x", mini_world, [])
    with pytest.raises(ValueError, match="repeats"):
        methods.erase("uce", mini_world, [concepts[0], concepts[0]])


def test_fit_baselines_checks_everything_first_and_gives_sld_the_erased_names(mini_world):
    concepts = [mini_world.concept("tench"), mini_world.concept("church")]
    with pytest.raises(ValueError, match="sld-m"):
        baselines.fit_baselines(mini_world, concepts, ["uce", "sld-m"], {"sld-m": {"sld_guidance_scale": -1.0}})
    with pytest.raises(ValueError, match="not in methods"):
        baselines.fit_baselines(mini_world, concepts, ["uce"], {"esd-x": {}})
    with pytest.raises(ValueError, match="bad hyperparameter"):
        baselines.fit_baselines(mini_world, concepts, ["sld-m"], {"sld-m": {"scale": 1.0}})
    rows = baselines.fit_baselines(mini_world, concepts, ["uce", "sld-m"])
    assert list(rows) == ["UCE", "SLD-M"]
    assert rows["UCE"].edit is not None and rows["UCE"].sampling() == {}
    assert rows["SLD-M"].edit is None and rows["SLD-M"].sampling() == {"sld": sld.SLDConfig(),
                                                                       "safety_text": "tench, church"}
    assert baselines.safety_text_for([mini_world.concept("nudity")]) is None   # SLD's own c_S for unsafe content


def test_generate_edited_under_sld_is_plain_cfg_at_zero_scale_and_steers_otherwise(mini_world, tmp_path):
    prompts, seeds = ["a photo of a tench", "a church"], [1, 2]
    plain = generate_edited(mini_world, None, prompts, seeds, tmp_path, FOUR_STEPS)
    off = generate_edited(mini_world, None, prompts, seeds, tmp_path, FOUR_STEPS,
                          sld=sld.SLDConfig(sld_guidance_scale=0.0), safety_text="tench")
    np.testing.assert_array_equal(off, plain)
    steered = generate_edited(mini_world, None, prompts, seeds, tmp_path, FOUR_STEPS,
                              sld=sld.SLDConfig(sld_warmup_steps=0), safety_text="tench")
    assert np.abs(steered.astype(int) - plain).max() > 0
    with pytest.raises(ValueError, match="safety_text is given without sld"):
        generate_edited(mini_world, None, prompts, seeds, tmp_path, FOUR_STEPS, safety_text="tench")
