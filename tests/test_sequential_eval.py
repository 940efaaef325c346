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
from unlearnkit.methods.contract import Erasure

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
        return Erasure([Edit({"weight": -w / 2}, name=f"{method}-{concept.name}")], info={"scale": hp["scale"]})

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


# --- notebook 03's calls: protocol, ablations, attack, run record, claims (fakes, no generation) ----------------------
def _mini_like_world():
    from unlearnkit.sampling import SamplerSettings
    from unlearnkit.worlds.mini import catalogue

    return SimpleNamespace(name="fake", object_classes=lambda: tuple(catalogue.OBJECTS), concept=catalogue.concept,
                           sampler=SamplerSettings(num_inference_steps=50), pipe=SimpleNamespace(unet=None))


def _protocol(tmp_path, orders=(3,), per_class=2):
    import pandas as pd

    from unlearnkit.sampling import SamplerSettings

    world = _mini_like_world()
    classes = se.object_classes(world)
    labels = tuple(c for c in classes for _ in range(per_class))
    eval_set = se.ClassPrompts(classes, tuple(f"a photo of a {c}" for c in labels), tuple(range(len(labels))), labels,
                               per_class)
    return se.SequentialProtocol(world, SamplerSettings(num_inference_steps=4),
                                 {n: se.paper_order(world, n) for n in orders}, eval_set, classifier=None,
                                 captions=pd.DataFrame({"prompt": ["a cat"], "seed": [0]}), clip_scorer=None,
                                 cache_dir=tmp_path / "cache", out=tmp_path / "out", clip_captions=1)


def test_protocol_main_order_is_ten_classes_when_run_else_the_first(tmp_path):
    assert _protocol(tmp_path, orders=(3, 6)).main_n == 3
    protocol = _protocol(tmp_path, orders=(3, 10))
    assert protocol.main_n == 10
    assert list(protocol.orders_frame().index) == ["3 classes", "10 classes"]
    assert protocol.orders_frame().loc["3 classes", "order"] == "chainsaw, truck, pump"
    with protocol.timed("step"):
        pass
    assert set(protocol.timings) == {"step"} and protocol.timing_summary() == {"step": "0s"}


def test_erased_class_attack_checks_its_classes_before_any_compute(tmp_path):
    protocol = _protocol(tmp_path)
    with pytest.raises(ValueError, match="not among the 3 erased classes"):
        se.erased_class_attack(protocol, ["tench"], 1, {"budget": 2}, {"steps": 2})
    attack = se.erased_class_attack(protocol, [], 3)
    assert attack.run({"original": None}) is None
    assert attack.record() == {"attack_classes": [], "attack_prompts_per_class": 3}
    attack = se.erased_class_attack(protocol, ["truck"], 1)
    with pytest.raises(ValueError, match="has not run"):
        attack.record()


def _fake_sculpting(monkeypatch):
    """SM's training data and fit replaced by fakes that record every config trained; evaluation reads the fit's
    Edit (its single delta is the number of the fit) so that each setting's Total Acc says which fit produced it."""
    from unlearnkit.methods import sculpting as sm

    fits = []

    def fake_fit(world, concepts, config, *, progress=False, data=None):
        fits.append(config)
        return Erasure([Edit({"w": torch.tensor([float(len(fits))])})])

    def fake_evaluate(world, edit, eval_set, erased, classifier, cache_dir, settings):
        assert eval_set.classes == tuple(erased)            # the ablations evaluate the erased classes only
        return se.ClassEvaluation({se.TOTAL_ACC: float(edit.deltas["w"][0])}, np.zeros((0, 2, 2, 3), np.uint8), [])

    monkeypatch.setattr(sm, "training_data", lambda world, concepts, config, cache: {c.name: None for c in concepts})
    monkeypatch.setattr(sm, "fit", fake_fit)
    monkeypatch.setattr(se, "evaluate_classes", fake_evaluate)
    monkeypatch.setattr(se, "generic_clip", lambda world, edit, *args: -float(edit.deltas["w"][0]))
    return fits


SCULPTING = {"images_per_class": 2, "epochs": 2, "warmup_steps": 1, "update_freq": 1, "lr": 1e-4, "alpha": 0.25,
             "beta": 0.25, "keep_fraction": 0.5, "scope": "xattn"}


def _ablations(protocol):
    return se.Ablations(protocol, SCULPTING, {"images_per_class": 4, "update_freq": 2}, 2, sparsities=[0.2, 0.5],
                        scopes={"Cross-Attn": "xattn", "UNet": "unet"}, update_fractions={"50 steps": 0.1},
                        alphas=[0.0, 0.25], betas=[0.25, 1.0])


def test_ablations_train_each_setting_once_in_the_notebooks_order_and_write_its_tables(tmp_path, monkeypatch):
    import json

    fits = _fake_sculpting(monkeypatch)
    protocol = _protocol(tmp_path)
    ablations = _ablations(protocol)
    assert ablations.order == ["chainsaw", "truck"] and ablations.eval_set.classes == ("chainsaw", "truck")
    assert ablations.base.images_per_class == 4 and ablations.base.update_freq == 2 and ablations.base.epochs == 2

    fixed = ablations.fixed_vs_dynamic()
    assert list(fixed.index) == ["Fixed mask", "Ours"] and fixed[se.TOTAL_ACC].tolist() == [1.0, 2.0]
    assert fits[0].update_freq is None and fits[1].update_freq == 2
    table5 = ablations.table5()
    assert list(table5.table.columns) == ["20% Total Acc", "20% CLIP", "50% Total Acc", "50% CLIP"]
    # (scope="xattn", keep_fraction=0.5) is the dynamic run's config, but other changes: trained again, as before
    assert [(c.scope, c.keep_fraction) for c in fits[2:6]] == [("xattn", 0.8), ("xattn", 0.5), ("unet", 0.8),
                                                                  ("unet", 0.5)]
    assert table5.table.loc["UNet", "50% CLIP"] == -6.0
    steps = ablations.stage_steps
    assert ablations.update_intervals() == {"50 steps": max(1, round(0.1 * steps))}
    assert ablations.table8().table.loc["Ours", "50 steps"] == 7.0
    ablations.fig5()
    # α = 0.25, β = 0.25 is asked by both panels and trained once
    assert [(c.alpha, c.beta) for c in fits[7:]] == [(0.0, 0.25), (0.25, 0.25), (0.25, 1.0)]
    assert len(fits) == 10
    assert ablations.run() == {se.TOTAL_ACC: 2.0} and len(fits) == 10          # memoised
    assert ablations.run(clip=True) == {se.TOTAL_ACC: 11.0, "CLIP": -11.0}     # CLIP missing: trained again
    assert "ablations" in protocol.timings

    manifest = json.loads((protocol.out / "manifest.json").read_text())
    assert {name: entry["regenerates"] for name, entry in manifest.items()} == {
        "fixed_vs_dynamic_mask.md": "SM §4.4 dynamic-mask ablation", "table5.md": "SM Table 5",
        "table5_vs_paper.md": None, "table8.md": "SM Table 8", "fig5_alpha.md": "SM Fig. 5",
        "fig5_beta.md": "SM Fig. 5", "fig5_loss_scales.png": "SM Fig. 5"}
    interval = max(1, round(0.1 * steps))
    caption, resolution = manifest["table8.md"]["caption"].split("; resolution: ")
    assert caption == f"Total Acc; columns: the paper's interval, here 50 steps → {interval} steps"
    assert resolution == "2 images a class and model (an accuracy moves in steps of 1/2); one draw, no interval"


def test_run_parameters_record_every_key_of_the_committed_run_record(tmp_path, monkeypatch):
    """run.json of notebook 03 records the same parameters, in the same order, as the mini report committed."""
    import json
    from pathlib import Path

    import pandas as pd

    _fake_sculpting(monkeypatch)
    protocol = _protocol(tmp_path, orders=(3, 6))
    baselines = se.SequentialBaselines(protocol, ["uce"], {"uce": {"tokens": "all"}})
    attack = se.erased_class_attack(protocol, ["truck"], 1, {"budget": 2}, {"steps": 2, "noise_samples": 1})

    def fake_attack(world, models, classes, prompts_per_class, *args):
        table = pd.DataFrame({"class": classes * len(models), "method": list(models) * len(classes),
                              "n_prompts": 1, "plain rate": 1.0, "ASR ring": 1.0, "ASR soft": 1.0,
                              "ASR soft (words)": 1.0})
        table.attrs.update(prompts=["a photo of a truck"], seeds=[se.EVAL_SEED_OFFSET], seconds={"ring": 0.0})
        return table

    monkeypatch.setattr(se, "attack_erased_classes", fake_attack)
    assert attack.run({"original": None, "Ours": None})["class"].tolist() == ["truck", "truck"]
    parameters = se.run_parameters(protocol, protocol.sculpting_config(**SCULPTING), _ablations(protocol), baselines,
                                   attack, world="mini", model_path=None, device="cpu", num_threads=1,
                                   draws=3, draw_seeds=4, held_out_orders=[["truck"]],   # as notebook 03 passes them
                                   single_class_methods=["uce"], single_class_hyperparameters={})
    committed = Path(__file__).resolve().parents[1] / "reports" / "mini" / "03_sequential_imagenette" / "run.json"
    assert list(parameters) == list(json.loads(committed.read_text())["parameters"])
    assert parameters["orders"] == {"3": ["chainsaw", "truck", "pump"], "6": se.paper_order(protocol.world, 6)}
    assert parameters["attack_prompts"] == ["a photo of a truck"] and parameters["attack"]["ring"]["budget"] == 2
    assert parameters["method_hyperparameters"] == {"uce": {"tokens": "all"}}
    with pytest.raises(ValueError, match="unknown method"):
        se.SequentialBaselines(protocol, ["no-such-method"], {})


def test_claims_read_table1_the_three_class_table_and_the_mask_ablation():
    import pandas as pd

    table = pd.DataFrame({se.TOTAL_ACC: [0.9, 0.1], se.FORGOTTEN_TO_SUPERCLASS: [0.05, 0.5],
                          se.SUPERCLASS_RATE: [0.2, 0.9]}, index=pd.Index(["original", "Ours"], name="method"))
    table1 = se.Table1(10, table, table, None, {})
    three = se.PaperComparison(pd.DataFrame({se.OTHERS_ACC: [0.8]}, index=["Ours"]), None)
    fixed = pd.DataFrame({se.TOTAL_ACC: [0.3, 0.2]}, index=["Fixed mask", "Ours"])
    checks = se.claims(table1, {3: three}, fixed)
    assert [holds for holds, _ in checks.values()] == [True, False, True, True]
    assert list(checks)[0] == "after the 10 sequential stages, Total Acc of the erased classes <= 0.15"
    assert checks["in the 3-class setting, Others Acc >= 0.85"][1] == "Others Acc 0.800"
    assert len(se.claims(table1, {}, fixed)) == 3                        # no 3-class run: no 3-class claim
    table1.check_attack_rates()                                          # no attacks: nothing to check
    with_attacks = se.Table1(10, table.assign(**{"plain rate": [0.5, None], "ASR ring": 0.5, "ASR soft": 0.5}),
                             table, table, {})
    with pytest.raises(AssertionError):
        with_attacks.check_attack_rates()


def test_each_baseline_runs_on_the_sm_tables_that_list_it():
    methods = ["fmn", "ac", "esd-x", "esd-u", "salun", "mace", "sepme", "uce"]
    # SepME is a row of SM Table 2 only; UCE is in no SM table and stays an extra row of Table 1
    assert se.table1_methods(methods) == ["fmn", "ac", "esd-x", "esd-u", "salun", "mace", "uce"]
    table2 = se.listed_methods(methods, se.paper_values.paper_table("sculpting_memory", 2))
    table9 = se.listed_methods(methods, se.paper_values.paper_table("sculpting_memory", 9))
    assert table2 == ["fmn", "ac", "esd-x", "salun", "mace", "sepme"] and table9 == ["esd-x", "salun", "mace"]


def test_single_class_draws_erase_a_different_held_out_class_per_draw_with_its_own_seed(tmp_path, monkeypatch):
    """One held-out class erased alone per draw, training seed ``seed + d``, measured beside the original on the
    draw's held-out seeds; a perfect eraser's verdicts hold and a no-op's fail (the maths of the claims)."""
    from unlearnkit import methods as erasers
    from unlearnkit.worlds.mini import splits
    from unlearnkit.worlds.protocol import ConceptSplit

    protocol = _protocol(tmp_path)
    split = ConceptSplit("object", *splits.split("object"), splits.HELD_OUT_FIRST_SEED)
    protocol.world.concept_split = lambda kind: split
    protocol.world.evaluation_prompts = lambda name, n, first_seed=0: [(name, first_seed + k) for k in range(n)]
    fitted = []

    def fake_erase(name, world, concept, **hyperparameters):
        fitted.append((name, concept.name, hyperparameters.get("seed")))
        return Erasure([Edit({}, name=f"{name}:{concept.name}")])

    def fake_per_image(protocol, edit, eval_set, erased, superclass=False):
        labels = np.array(eval_set.labels)
        assert eval_set.seeds[0] >= split.held_out_first_seed        # evaluated at held-out seeds only
        if edit is None or edit.name.startswith("uce"):               # "uce" plays a no-op eraser here
            return {"hit": np.ones(len(labels))}
        return {"hit": (labels != erased[0]).astype(float)}           # forgets its class, keeps every other

    monkeypatch.setattr(erasers, "erase", fake_erase)
    monkeypatch.setattr(se, "_per_image", fake_per_image)
    single = se.single_class_draws(protocol, {"esd-x": {"iterations": 1, "seed": 7}, "uce": {}}, draws=3,
                                   seeds_per_class=16)
    assert len(set(single.classes)) == 3 and set(single.classes) <= set(split.held_out)
    assert [f for f in fitted if f[0] == "esd-x"] == [("esd-x", c, 7 + d) for d, c in enumerate(single.classes)]
    assert all(seed is None for name, _, seed in fitted if name == "uce")    # UCE's Config has no seed to move
    rows = single.rows.set_index(["draw", "model"])
    assert rows.loc[(0, "original"), "erased acc"] == 1.0 and rows.loc[(0, "ESD-x"), "erased acc"] == 0.0
    assert rows.loc[(2, "ESD-x"), "others acc"] == 1.0 and len(single.samples["esd-x"][0]["others"]) == 9 * 16
    outcomes = {claim: v.outcome for claim, v in se.single_class_claims(single).items()}
    assert [o for c, o in outcomes.items() if c.startswith("ESD-x")] == ["holds", "holds"]
    assert [o for c, o in outcomes.items() if c.startswith("UCE")] == ["fails", "holds"]
