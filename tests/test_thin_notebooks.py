"""Notebooks 02, 04 and 05 are thin (issue #17): their protocols live in ``unlearnkit.experiments`` — the shared
"original + each model → rows" builder, the run-record parameters, each notebook's claims — and are tested here on
synthetic tables and fake benchmarks (no UNet runs)."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from unlearnkit import reports
from unlearnkit.core.edits import Edit
from unlearnkit.experiments import mass_fusion, nsfw, restoration
from unlearnkit.experiments.baselines import BaselineModel, evaluate_rows, weight_edits

ROOT = Path(__file__).resolve().parents[1]
THIN = ("02_single_concept_nsfw", "04_sepme_restoration", "05_mass_fusion")


def code_cells(stem: str) -> list[str]:
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"]
            if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("stem", THIN)
def test_notebook_is_parameters_then_calls_without_helpers_or_world_branches(stem):
    lines = [line for cell in code_cells(stem) for line in cell.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 100, f"{stem}: {len(lines)} code lines outside the parameters cell"
    assert not [line for line in lines if line.lstrip().startswith(("def ", "class ", "lambda "))]
    assert not [line for line in lines if 'world == "' in line or "world == '" in line]


@pytest.mark.parametrize("stem", THIN)
def test_notebook_file_is_stored_as_written(stem):
    """JSON as ``json.dumps(nb, indent=1, ensure_ascii=False) + "\\n"``, every cell with an id, no outputs."""
    text = (ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8")
    nb = json.loads(text)
    assert json.dumps(nb, indent=1, ensure_ascii=False) + "\n" == text
    assert all(c.get("id") for c in nb["cells"])
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert sum("parameters" in c["metadata"].get("tags", []) for c in nb["cells"]) == 1


# --- baselines: the shared rows builder -------------------------------------------------------------------------
def tiny_edit(name="e", value=1.0) -> Edit:
    return Edit({"w": torch.full((2,), value)}, name=name)


def test_evaluate_rows_passes_each_model_its_edit_and_sampling_in_order():
    calls = []

    def evaluate(label, edit, **sampling):
        calls.append((label, edit, sampling))
        return {"method": label, "score": len(calls)}, np.full((1, 2, 2, 3), len(calls), dtype=np.uint8)

    edit = tiny_edit()
    sld = SimpleNamespace(name="sld")
    models = {"original": None, "raw": edit, "ESD-x": BaselineModel("esd-x", "ESD-x", edit=edit, seconds=2.0),
              "SLD-M": BaselineModel("sld-m", "SLD-M", sld=sld, safety_text="cats")}
    table, images = evaluate_rows(evaluate, models)
    assert [c[0] for c in calls] == list(models)
    assert calls[0][1] is None and calls[1][1] is edit and calls[2][1] is edit
    assert calls[3][2] == {"sld": sld, "safety_text": "cats"} and calls[1][2] == {}
    assert list(table.index) == list(models) and table.index.name == "method"
    assert table["score"].tolist() == [1, 2, 3, 4]
    assert list(images) == list(models) and images["SLD-M"][0, 0, 0, 0] == 4
    assert set(table.attrs["seconds"]) == set(models)
    with pytest.raises(TypeError, match="bad"):
        evaluate_rows(evaluate, {"bad": "not a model"})
    with pytest.raises(ValueError, match="empty"):
        evaluate_rows(evaluate, {})


def test_weight_edits_keeps_the_original_and_edits_and_drops_sld():
    edit = tiny_edit()
    models = {"original": None, "fused": edit, "UCE": BaselineModel("uce", "UCE", edit=edit),
              "SLD-M": BaselineModel("sld-m", "SLD-M", sld=object())}
    assert weight_edits(models) == {"original": None, "fused": edit, "UCE": edit}


# --- the run record ---------------------------------------------------------------------------------------------
def test_parameters_from_records_named_values_then_derived_ones(tmp_path):
    namespace = {"world": "mini", "seeds": [1, 2], "device": "cpu", "unrecorded": 3}
    parameters = reports.parameters_from(namespace, "world device\n seeds", sampler={"steps": 4})
    assert parameters == {"world": "mini", "device": "cpu", "seeds": [1, 2], "sampler": {"steps": 4}}
    assert list(parameters) == ["world", "device", "seeds", "sampler"]
    reports.write_run_record(tmp_path, parameters)
    assert json.loads((tmp_path / "run.json").read_text())["parameters"] == parameters
    with pytest.raises(KeyError, match="missing"):
        reports.parameters_from(namespace, "world missing")
    with pytest.raises(ValueError, match="world"):
        reports.parameters_from(namespace, "world", world="paper")


@pytest.mark.parametrize("stem, recorded", [
    ("02_single_concept_nsfw", "world model_path device methods method_hyperparameters sample_steps "
                               "i2p_seeds_per_prompt i2p_subset i2p_limit n_coco sampler attack attack_prompts "
                               "attack_seeds"),
    ("04_sepme_restoration", "world model_path device styles other_styles objects other_objects seeds eval_sampler "
                             "methods method_hyperparameters sepme_config ac_config tau_values run_refits run_objects"),
    ("05_mass_fusion", "world model_path device erased preserved erase_styles eval_seeds preserved_seeds style_seeds "
                       "n_captions sampler ant_config mace_config fusion mace_fusion prior_identity_weight "
                       "ablation_configs ablation_identities methods method_hyperparameters sld_safety_texts "
                       "attack_identities attack attack_prompts attack_seeds"),
])
def test_run_record_names_every_parameter_recorded_before(stem, recorded):
    """The keys ``run.json`` recorded before the notebooks were thinned are still named in the run-record cell
    (the attack entries come from ``attack_record`` or, in 05, ``mass_fusion.attack_parameters``)."""
    cell = next(c for c in code_cells(stem) if "write_run_record" in c)
    for key in recorded.split():
        if key in ("attack", "attack_prompts", "attack_seeds", "attack_identities"):
            assert "attack_record(" in cell or "attack_parameters(" in cell
        else:
            assert f" {key} " in f" {cell} ".replace('"', " ").replace("=", " ").replace("(", " "), key


# --- notebook 02 ------------------------------------------------------------------------------------------------
def test_attacked_prompts_spread_over_the_set_with_first_and_last():
    i2p = pd.DataFrame({"prompt": [f"p{i}" for i in range(10)], "seed": range(100, 110)})
    assert list(nsfw.attacked_prompts(i2p, 3).prompt) == ["p0", "p4", "p9"]   # 4.5 rounds to even
    assert list(nsfw.attacked_prompts(i2p, 3).seed) == [100, 104, 109]
    assert list(nsfw.attacked_prompts(i2p, 1).prompt) == ["p0"]


def test_saliency_variants_are_ant_table5_rows():
    hp = {"lr": 1e-2, "saliency": {"keep_fraction": 0.5, "seeds": [24, 42, 98], "max_prompts": 2}}
    variants = nsfw.saliency_variants(hp, {"active_parameters": 25, "scope_parameters": 100})
    assert list(variants) == ["whole scope (no map)", "single map", "single map, size of M*", "intersection (ANT)"]
    assert variants["whole scope (no map)"] is None
    assert variants["single map"] == {"keep_fraction": 0.5, "seeds": [24], "max_prompts": 1}
    assert variants["single map, size of M*"] == {"keep_fraction": 0.25, "seeds": [24], "max_prompts": 1}
    assert variants["intersection (ANT)"] is hp["saliency"]
    assert nsfw.saliency_variants({}, {"active_parameters": 1, "scope_parameters": 2})["single map"]["max_prompts"] == 1


def test_table1_rows_adds_fit_seconds_and_timings():
    bench = SimpleNamespace(evaluate=lambda label, edit=None, **kw: ({"method": label, "Total": 3 if edit is None else 0},
                                                                     np.zeros((2, 2, 2, 3), np.uint8)))
    setup = nsfw.NSFWSetup(world=None, settings=None, concept=None, i2p=None, sexual=None, coco=None, bench=bench,
                           attack_config=None, cache_dir="unused")
    models = {"ANT": BaselineModel("ant", "ANT", edit=tiny_edit(), seconds=5.0),
              "SLD-M": BaselineModel("sld-m", "SLD-M", sld=object())}
    table, redacted = nsfw.table1_rows(setup, models)
    assert list(table.index) == ["original", "ANT", "SLD-M"] and list(table.columns) == ["Total", "erase (s)"]
    assert np.isnan(table.loc["original", "erase (s)"]) and table.loc["ANT", "erase (s)"] == 5.0
    assert set(setup.timings) == {"ANT", "SLD-M"} and setup.timings["ANT"] >= 5.0
    assert list(redacted) == ["original", "ANT", "SLD-M"]


def nsfw_table1(ant_total=0, ant_clip=30.0, soft=0.5):
    table = pd.DataFrame({"Total": [100, ant_total, 40], "CLIP": [30.5, ant_clip, 29.0],
                          "plain rate": [0.9, 0.0, 0.2], "ASR ring": [0.9, 0.0, 0.1], "ASR soft": [1.0, soft, 0.2]},
                         index=pd.Index(["original", "ANT", "ESD-x"], name="method"))
    return nsfw.with_attack_rates(table[["Total", "CLIP"]], pd.DataFrame(
        {"method": table.index, "plain_rate": table["plain rate"].values, "asr_ring": table["ASR ring"].values,
         "asr_soft": table["ASR soft"].values, "asr_soft_projected": np.nan}))


def test_nsfw_claims_and_which_are_required():
    table5 = pd.DataFrame({"Total": [50, 5, 30, 10], "CLIP": [20.0, 25.0, 26.0, 29.0]},
                          index=["whole scope (no map)", "single map", "single map, size of M*", "intersection (ANT)"])
    checks = nsfw.claims(nsfw_table1(), table5)
    assert len(checks) == 5 and all(isinstance(e, str) for _, e in checks.values())
    holds = [bool(h) for h, _ in checks.values()]
    assert holds == [True, True, True, True, False]   # the intersection (10) loses to one map at its threshold (5)
    assert nsfw.required(checks) == list(checks)[:4]
    assert [bool(h) for h, _ in nsfw.claims(nsfw_table1(ant_total=20, ant_clip=28.0, soft=0.0)).values()] == \
        [False, False, False]


def test_sm_table4_claims_are_recorded_not_required():
    def table4(sm_total, sm_clip):
        return pd.DataFrame({"Total": [90, 12, 3, sm_total], "CLIP": [31.0, 20.0, 24.0, sm_clip]},
                            index=pd.Index(["original", "SalUn", "MACE", "Sculpting Memory"], name="method"))

    checks = nsfw.claims(nsfw_table1(), table4=table4(2, 30.0))
    assert [c for c in checks if "SM Table 4" in c] == list(nsfw.TABLE4_CLAIMS)
    assert [bool(checks[c][0]) for c in nsfw.TABLE4_CLAIMS] == [True, True]
    assert "SalUn: 12" in checks[nsfw.TABLE4_CLAIMS[0]][1]
    checks = nsfw.claims(nsfw_table1(), table4=table4(5, 22.0))   # MACE (3) erases more; SalUn < SM < MACE on CLIP
    assert [bool(checks[c][0]) for c in nsfw.TABLE4_CLAIMS] == [False, False]
    assert not set(nsfw.TABLE4_CLAIMS) & set(nsfw.required(checks))


# --- notebook 04 ------------------------------------------------------------------------------------------------
def subsets_table(names, erased_acc=0.1, kept_acc=0.95, method="SepME1"):
    rows = []
    for subset in restoration.all_subsets(names):
        for c in names:
            rows.append({"method": method, "subset": restoration.subset_label(subset), "concept": c,
                         "erased": c in subset, "accuracy": erased_acc if c in subset else kept_acc})
    return pd.DataFrame(rows)


def test_sepme_claims_hold_only_when_every_subset_is_erased_and_restored():
    names = ["a", "b", "c"]
    original = pd.DataFrame({"concept": names + ["others"], "accuracy": [0.95, 0.97, 0.93, 0.9]})
    (claim, (holds, evidence)), = restoration.claims(subsets_table(names), original, names).items()
    assert claim == "SepME erases exactly the chosen subset of concepts and restores the rest"
    assert holds and evidence == "max erased acc 0.10, min kept acc 0.95"
    (holds, evidence), = restoration.claims(subsets_table(names, erased_acc=0.4), original, names).values()
    assert not holds and "still detected: 0.40" in evidence
    (holds, evidence), = restoration.claims(subsets_table(names, kept_acc=0.87), original, names).values()
    assert not holds and "restored in" in evidence and "but accuracy" not in evidence


def test_sepme_run_times_each_step_and_evaluates_with_its_seeds(monkeypatch):
    seen = {}

    def fake_evaluate_models(world, models, names, seeds, cache_dir, settings, **kwargs):
        seen.update(names=names, seeds=seeds, **kwargs)
        return pd.DataFrame({"method": [kwargs["method"]]})

    monkeypatch.setattr(restoration, "evaluate_models", fake_evaluate_models)
    run = restoration.SepMERun(world=None, config=None, ac_config=None, hyperparameters={}, settings="s",
                               seeds=[1, 2], other_seeds=[1], cache_dir=Path("c"), lpips="lp")
    assert run.timed("fit", lambda x: x + 1, 1) == 2 and run.timed("fit", lambda: 0) == 0
    assert set(run.timings) == {"fit"}
    run.evaluate({(): None}, "ORI", ["a"], ["o"])
    assert seen == {"names": ["a"], "seeds": [1, 2], "others": ["o"], "lpips": "lp", "method": "ORI",
                    "other_seeds": [1]}
    assert "evaluation" in run.timings


def test_sepme_prepare_rejects_an_unknown_base_before_any_compute():
    world = SimpleNamespace(sampler=SimpleNamespace(guidance_scale=5.0))
    with pytest.raises(ValueError, match="sepme_base"):
        restoration.prepare(world, "cache", seed=0, n_seeds=1, eval_steps=4, sepme_base="tiny")


# --- notebook 05 ------------------------------------------------------------------------------------------------
def test_resolve_groups_defaults_lists_and_all():
    names = [f"{f} {l}" for f in ("anna", "ben", "carl") for l in ("adams", "baker", "clark", "dunn")]
    held_out = {"identity": names, "style": ("v", "p", "k", "w")}   # every concept held out: the split's order
    world = SimpleNamespace(identity_split=lambda: (names[::2], names[1::2]),
                            style_split=lambda: (("v", "p"), ("v", "k", "w")),
                            concept_split=lambda kind: SimpleNamespace(held_out=held_out[kind]))
    groups = mass_fusion.resolve_groups(world, 2, 1, 1)
    assert groups.erased == ["anna adams", "ben adams"] and groups.preserved[:2] == ["anna baker", "ben baker"]
    assert groups.erase_styles == ["v", "p"] and groups.preserve_styles == ["k", "w"]
    everyone = mass_fusion.resolve_groups(world, 2, 1, 1, erase_identities="all", preserve_identities=["x y"],
                                          erase_styles=["k"])
    assert everyone.erased == names[::2] and everyone.preserved == ["x y"]
    assert everyone.erase_styles == ["k"] and everyone.preserve_styles == ["v", "p", "w"]   # every other style
    assert list(groups.frame().columns) == ["erased", "preserved (evaluated)"]


def test_table_models_and_attacked_identities():
    edit = tiny_edit()
    uce = BaselineModel("uce", "UCE", edit=edit)
    rows = mass_fusion.table_models({"ANT": edit, "MACE": edit}, {"UCE": uce})
    assert list(rows) == ["SD (original)", "ANT objective + fusion", "MACE objective + fusion", "UCE"]
    assert rows["UCE"] is uce and rows["SD (original)"] is None
    assert mass_fusion.attacked_identities(["a1", "a2", "b1", "b2", "c1", "c2"], 2, 2) == ["a1", "b1"]
    assert mass_fusion.attacked_identities(["a1", "b1"], 1, 0) == []


def test_attack_parameters_record_the_attacked_identities_and_budget():
    from unlearnkit.attacks import AttackConfig

    run = mass_fusion.MassFusionRun(world=None, settings=None, cache_dir=Path("c"), attack_config=AttackConfig())
    assert mass_fusion.attack_parameters(run, [], None) == {"attack_identities": []}
    attacks = pd.DataFrame({"method": ["SD (original)"]})
    attacks.attrs.update(prompts=["a portrait of anna adams"], seeds=[100])
    record = mass_fusion.attack_parameters(run, ["anna adams"], attacks)
    assert record["attack_identities"] == ["anna adams"] and record["attack_seeds"] == [100]
    assert record["attack_prompts"] == ["a portrait of anna adams"] and record["attack"] == AttackConfig().as_dict()
    assert mass_fusion.attack_table(run, {"SD (original)": None}, [], 100) is None


def test_with_attack_rates_averages_per_model_and_requires_every_weight_edit():
    table = pd.DataFrame({"H_c": [0.1, 0.9]}, index=pd.Index(["SD (original)", "ANT objective + fusion"],
                                                             name="method"))
    attacks = pd.DataFrame({"identity": ["a", "b", "a", "b"], "method": ["SD (original)"] * 2 + ["ANT objective + fusion"] * 2,
                            "n_prompts": 1, "plain rate": [1.0, 0.0, 0.0, 0.0], "ASR ring": [1.0, 1.0, 0.0, 1.0],
                            "ASR soft": [1.0, 1.0, 0.5, 0.5]})
    models = {"SD (original)": None, "ANT objective + fusion": tiny_edit(),
              "SLD-M": BaselineModel("sld-m", "SLD-M", sld=object())}
    joined = mass_fusion.with_attack_rates(table, attacks, models)
    assert joined.loc["SD (original)", "plain rate"] == 0.5 and joined.loc["ANT objective + fusion", "ASR ring"] == 0.5
    with pytest.raises(ValueError, match="ANT"):
        mass_fusion.with_attack_rates(table, attacks[attacks.method == "SD (original)"], models)


def fusion_tables(ant_acc_e=0.0, ant_acc_p=0.8, mace_h=0.5):
    table2 = pd.DataFrame({"Acc_e": [0.9, ant_acc_e, 0.2, 0.5], "Acc_p": [0.9, ant_acc_p, 0.6, 0.9],
                           "H_c": [0.18, 0.85, mace_h, 0.6], "recognisable ratio": [1.0, 0.9, 0.9, 1.0]},
                          index=["SD (original)", "ANT objective + fusion", "MACE objective + fusion", "UCE"])
    table3 = pd.DataFrame({"H_a": [0.0, 5.0, 3.0, 1.0]}, index=table2.index)
    return table2, table3


def test_mass_fusion_claims_and_which_are_required():
    checks = mass_fusion.claims(*fusion_tables(), n_erased=8, max_acc_erased=0.1, min_acc_preserved_ratio=0.8)
    assert list(checks)[:2] == ["with all 8 erase-group identities fused at once, Acc_e <= 0.1",
                                "Acc_p stays >= 0.8 x its value under the original model"]
    assert all(bool(h) for h, _ in checks.values()) and len(checks) == 5
    assert mass_fusion.required(checks) == list(checks)[:2]
    failing = mass_fusion.claims(*fusion_tables(ant_acc_e=0.3, ant_acc_p=0.5, mace_h=0.9), n_erased=8,
                                 max_acc_erased=0.1, min_acc_preserved_ratio=0.8)
    assert [bool(h) for h, _ in failing.values()] == [False, False, False, False, True]


def test_vs_paper_renames_our_rows_to_the_papers():
    table2, _ = fusion_tables()
    side = mass_fusion.vs_paper(table2, 2)
    assert {"SD v1.4", "Ours", "MACE", "UCE"} <= set(side.index)   # the paper's labels (its own method: "Ours")
    assert side.loc["Ours", "H_c (ours)"] == pytest.approx(0.85) and "Face Ratio (ours)" in side.columns


def test_fuse_needs_one_token_set_for_the_shared_concept_grams():
    from unlearnkit.methods import mace

    configs = {"ANT": mace.MACEConfig(fusion=mace.FusionConfig(tokens="all")),
               "MACE": mace.MACEConfig(objective="mace", fusion=mace.FusionConfig(tokens="concept"))}
    fitted = mass_fusion.ConceptLoRAs(concepts=[], configs=configs, banks={}, loras={})
    with pytest.raises(ValueError, match="token sets"):
        mass_fusion.fuse(mass_fusion.MassFusionRun(None, None, Path("c"), None), fitted, prior=None)
