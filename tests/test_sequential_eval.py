"""Stage-by-stage evaluation of sequential forgetting (SM Tables 1, 2, 9): heat-map bookkeeping, superclass rates,
and the sequential protocol for single-concept baselines — on fake worlds and edits, no generation."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearnkit.experiments import sequential as se
from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit

CLASSES = ("a", "b", "c")


def _fake_world(module=None):
    concepts = {c: Concept(c, (f"a photo of {c}", f"{c}"), anchor=f"super-{c}", kind="object", label=i)
                for i, c in enumerate(CLASSES)}
    def evaluation_prompts(name, n, first_seed=0):   # what both worlds do for a class without a prompt file
        texts = concepts[name].prompts
        return [(texts[k % len(texts)], first_seed + k) for k in range(n)]

    return SimpleNamespace(name="fake", concept=lambda n: concepts[n], evaluation_prompts=evaluation_prompts,
                           pipe=SimpleNamespace(unet=module or torch.nn.Linear(2, 1)))


def test_class_prompts_cycle_prompts_and_share_seeds():
    eval_set = se.class_prompts(_fake_world(), CLASSES, per_class=3, first_seed=100)
    assert eval_set.labels == ("a",) * 3 + ("b",) * 3 + ("c",) * 3
    assert eval_set.prompts[:3] == ("a photo of a", "a", "a photo of a")
    assert eval_set.seeds == (100, 101, 102) * 3
    sub = eval_set.subset(["c", "a"])
    assert sub.classes == ("a", "c") and sub.labels == ("a",) * 3 + ("c",) * 3
    with pytest.raises(ValueError, match="per_class"):
        se.class_prompts(_fake_world(), CLASSES, per_class=0)
    with pytest.raises(ValueError, match="not in this evaluation set"):
        eval_set.subset(["z"])


def test_cumulative_edits_are_partial_sums():
    edits = [Edit({"w": torch.full((2,), float(i + 1))}, name=f"e{i}") for i in range(3)]
    models = se.cumulative_edits(edits)
    assert models[0] is None
    assert [float(m.deltas["w"][0]) for m in models[1:]] == [1.0, 3.0, 6.0]


def test_stage_accuracy_heatmap_bookkeeping():
    """A fake evaluator whose accuracy of a class is 0 once the class is erased (read from the cumulative Edit)."""
    order = ["c", "a"]
    edits = [Edit({"w": torch.tensor([1.0])}, name="s0"), Edit({"w": torch.tensor([10.0])}, name="s1")]
    seen = []

    def fake_evaluate(world, model, eval_set, erased, classifier, cache_dir, settings):
        seen.append((None if model is None else float(model.deltas["w"]), list(erased)))
        row = {c: (0.0 if c in erased else 1.0) for c in eval_set.classes}
        kept = [row[c] for c in eval_set.classes if c not in erased]
        row[se.TOTAL_ACC] = float(np.mean([row[c] for c in erased])) if erased else float("nan")
        row[se.OTHERS_ACC] = float(np.mean(kept)) if kept else float("nan")
        return se.ClassEvaluation(row, np.zeros((0, 2, 2, 3), np.uint8), [])

    eval_set = se.class_prompts(_fake_world(), CLASSES, per_class=2)
    stages, evaluations = se.stage_accuracy(_fake_world(), edits, order, eval_set, None, "unused",
                                            evaluate=fake_evaluate)
    assert seen == [(None, []), (1.0, ["c"]), (11.0, ["c", "a"])]
    assert list(stages.index) == [0, 1, 2] and list(stages["erased"]) == ["—", "c", "a"]
    assert stages.loc[2, list(CLASSES)].tolist() == [0.0, 1.0, 0.0]
    assert np.isnan(stages.loc[0, se.TOTAL_ACC]) and stages.loc[2, se.OTHERS_ACC] == 1.0
    assert len(evaluations) == 3
    with pytest.raises(ValueError, match="stage edits"):
        se.stage_accuracy(_fake_world(), edits[:1], order, eval_set, None, "unused", evaluate=fake_evaluate)


def test_superclass_rates_separate_generic_members_from_the_object():
    classifier = SimpleNamespace(predict_superclass=lambda images: ["super-a", "super-a", "x", "super-b"])
    labels = ["a", "a", "a", "b"]
    predicted = ["a", "none", "none", "b"]          # image 0 is still the object, image 1 a generic member
    images = np.zeros((4, 2, 2, 3), np.uint8)
    rates = se._superclass_rates(classifier, images, labels, predicted, {"a": "super-a", "b": "super-b"}, ["a"])
    assert rates[se.SUPERCLASS_RATE] == pytest.approx(2 / 3)
    assert rates[se.FORGOTTEN_TO_SUPERCLASS] == pytest.approx(1 / 3)
    no_head = se._superclass_rates(object(), images, labels, predicted, {"a": "super-a", "b": "super-b"}, ["a"])
    assert np.isnan(no_head[se.SUPERCLASS_RATE])


def test_sequential_baseline_trains_each_stage_on_the_model_so_far_and_edits_sum():
    """Stage i sees the weights after stages < i; the world's model is unchanged afterwards."""
    unet = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        unet.weight.fill_(1.0)
    world = _fake_world(unet)
    seen_weights = []

    def fake_erase(method, world, concept, progress=False, **hp):
        # a toy eraser that halves the weight it is given: its delta depends on the model it starts from
        w = world.pipe.unet.weight.detach().clone()
        seen_weights.append(float(w[0, 0]))
        return Edit({"weight": -w / 2}, name=f"{method}-{concept.name}"), {"scale": hp["scale"]}

    concepts = [world.concept(c) for c in CLASSES]
    edits, infos = se.fit_sequential_baseline(world, "toy", concepts, erase=fake_erase, scale=3)
    assert seen_weights == [1.0, 0.5, 0.25]
    assert float(Edit.total(edits).deltas["weight"][0, 0]) == pytest.approx(-0.875)
    assert float(unet.weight.detach()[0, 0]) == 1.0
    assert [e.name for e in edits] == ["toy0:a", "toy1:b", "toy2:c"]
    assert [i["concept"] for i in infos] == list(CLASSES) and infos[0]["scale"] == 3


def test_paper_orders_map_onto_the_mini_objects():
    from unlearnkit.worlds.mini import catalogue

    mini = SimpleNamespace(name="mini", object_classes=lambda: tuple(catalogue.OBJECTS))
    assert se.paper_order(mini, 3) == ["chainsaw", "truck", "pump"]
    assert se.paper_order(mini, 10) == list(se.object_classes(mini))
    assert se.imagenette_names(mini)["springer"] == "English springer"
    with pytest.raises(ValueError, match="sequential orders"):
        se.paper_order(mini, 4)


def test_attack_erased_classes_attacks_each_class_with_the_eval_prompts_and_averages_per_model():
    """A fake attack: records what it was given and returns rates that depend on the class and the model."""
    import pandas as pd

    from unlearnkit.sampling import SamplerSettings

    calls = []

    def fake_attack(world, edits, concept, prompts, seeds, config, cache_dir=None):
        calls.append((concept.name, prompts, seeds, world.sampler.num_inference_steps, cache_dir))
        rows = [{"method": name, "n_prompts": len(prompts), "plain_rate": 0.0,
                 "asr_ring": 0.5 if concept.name == "a" else 1.0, "asr_soft": float(i),
                 "asr_soft_projected": float("nan")} for i, name in enumerate(edits)]
        table = pd.DataFrame(rows)
        table.attrs["seconds"] = {"ring": 1.0, **{f"soft:{name}": 2.0 for name in edits}}
        table.attrs["adversarial_prompts"] = {"ring": ["x"] * len(prompts)}
        return table

    world = _fake_world()
    world.sampler = SamplerSettings(num_inference_steps=50)
    models = {"original": None, "Ours": None}
    per_class = se.attack_erased_classes(world, models, ["c", "a"], 2, settings=SamplerSettings(num_inference_steps=4),
                                         cache_dir="cache", attack=fake_attack)
    assert calls == [("c", ["a photo of c", "c"], [se.EVAL_SEED_OFFSET, se.EVAL_SEED_OFFSET + 1], 4, "cache"),
                     ("a", ["a photo of a", "a"], [se.EVAL_SEED_OFFSET, se.EVAL_SEED_OFFSET + 1], 4, "cache")]
    assert world.sampler.num_inference_steps == 50          # the world itself keeps its sampler
    assert list(per_class.columns) == ["class", "method", "n_prompts", "plain rate", "ASR ring", "ASR soft",
                                       "ASR soft (words)"]
    assert list(per_class["class"]) == ["c", "c", "a", "a"]
    assert per_class.attrs["seconds"] == {"ring": 2.0, "soft": 8.0}
    assert set(per_class.attrs["adversarial_prompts"]) == {"c", "a"}
    mean = se.mean_attack_rates(per_class)
    assert list(mean.index) == ["original", "Ours"]
    assert mean.loc["Ours", "ASR ring"] == pytest.approx(0.75) and mean.loc["Ours", "ASR soft"] == 1.0
    assert np.isnan(mean.loc["original", "ASR soft (words)"])
    with pytest.raises(ValueError, match="classes is empty"):
        se.attack_erased_classes(world, models, [], 2, attack=fake_attack)


def test_attack_world_detects_with_the_accuracy_classifier_and_leaves_the_world_alone():
    from unlearnkit.sampling import SamplerSettings

    world = _fake_world()
    world.sampler = SamplerSettings(num_inference_steps=50)
    assert se._attack_world(world) is world and se._attack_world(world, world.sampler) is world
    classifier = SimpleNamespace(predict=lambda images: ["a", "b", "a"])
    attacked = se._attack_world(world, SamplerSettings(num_inference_steps=4), classifier)
    assert attacked.pipe is world.pipe and attacked.sampler.num_inference_steps == 4
    assert attacked.detect(world.concept("a"), np.zeros((3, 2, 2, 3), np.uint8)).tolist() == [True, False, True]
    assert world.sampler.num_inference_steps == 50 and not hasattr(world, "detect")
