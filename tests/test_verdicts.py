"""Verdicts with intervals (reports/verdicts.py) and the held-out split and draws they are measured on."""
import json

import numpy as np
import pandas as pd
import pytest

from unlearnkit import reports
from unlearnkit.experiments import cfg_reversal, mass_fusion, nsfw, restoration, sequential
from unlearnkit.experiments.draws import concept_draws, describe_draws, evaluation_seeds, held_out_draws
from unlearnkit.reports.index import notebook_section
from unlearnkit.reports.verdicts import Verdict, bootstrap_interval, judge, rate_sample
from unlearnkit.worlds.mini import catalogue, splits
from unlearnkit.worlds.protocol import ConceptSplit


class SplitOnly:
    """A world that only answers ``concept_split`` and ``identity_split`` (what draws read), from the mini split."""

    def concept_split(self, kind):
        tuning, held = splits.split(kind)
        return ConceptSplit(kind, tuning, held, splits.HELD_OUT_FIRST_SEED)

    def concepts(self, kind):
        return list(sum(splits.split(kind), ()))

    def identity_split(self):
        return catalogue.identity_split()

    def concept(self, name):
        return catalogue.concept(name)

    def object_classes(self):
        return tuple(catalogue.OBJECTS)


# --- the interval ---------------------------------------------------------------------------------------------------
def test_rate_sample_holds_the_rate_it_was_built_from():
    sample = rate_sample(0.25, 16)
    assert sample.shape == (16,) and sample.sum() == 4 and set(np.unique(sample)) == {0.0, 1.0}
    with pytest.raises(ValueError):
        rate_sample(1.5, 4)


def test_interval_covers_the_true_rate_about_as_often_as_it_says():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(60):
        draws = [{"x": (rng.random(24) < 0.7).astype(float)} for _ in range(3)]
        _, low, high = bootstrap_interval(draws, lambda m: m["x"], n_boot=300, seed=trial)
        covered += low <= 0.7 <= high
    assert covered >= 51        # 95 % nominal: ≥ 85 % of 60 trials (binomial tail < 1e-3 when true coverage ≥ 95 %)


def test_a_perfect_rate_on_few_images_is_not_read_as_certainty():
    est, low, high = bootstrap_interval([{"x": np.ones(8)}], lambda m: m["x"])
    assert est == 1.0 and high == pytest.approx(1.0, abs=1e-3) and low < 0.9   # Jeffreys: 8 of 8 leaves doubt
    _, low_many, _ = bootstrap_interval([{"x": np.ones(200)}], lambda m: m["x"])
    assert low_many > 0.98
    est, low, high = bootstrap_interval([{"x": np.zeros(16)}] * 3, lambda m: m["x"])
    assert est == low == 0.0 < high < 0.15            # the interval contains its estimate (0 of 48 is 0)


def test_spread_across_draws_widens_the_interval():
    same = [{"x": rate_sample(0.5, 40)} for _ in range(3)]
    spread = [{"x": rate_sample(p, 40)} for p in (0.2, 0.5, 0.8)]
    _, lo_s, hi_s = bootstrap_interval(same, lambda m: m["x"], seed=3)
    est, lo_d, hi_d = bootstrap_interval(spread, lambda m: m["x"], seed=3)
    assert est == pytest.approx(0.5)
    assert hi_d - lo_d > 1.5 * (hi_s - lo_s)


def test_paired_quantities_are_resampled_together():
    hits = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], float)
    draws = [{"a": hits, "b": hits.copy()}]
    _, low, high = bootstrap_interval(draws, lambda m: m["a"] - m["b"], paired=[["a", "b"]])
    assert low == high == 0.0                               # the same images under both: no difference, ever
    _, low, high = bootstrap_interval([{"a": hits * 0.5, "b": hits * 0.5 + 0.1}], lambda m: m["a"] - m["b"])
    assert low < high                                       # unpaired: each resampled on its own


@pytest.mark.parametrize("rate, direction, outcome", [
    (0.9, ">", "holds"), (0.1, ">", "fails"), (0.55, ">", "inconclusive"),
    (0.1, "<", "holds"), (0.9, "<", "fails"), (0.45, "<", "inconclusive"),
])
def test_judge_reads_the_interval_against_the_threshold(rate, direction, outcome):
    draws = [{"x": rate_sample(rate, 20)} for _ in range(3)]
    verdict = judge("x vs 0.5", draws, lambda m: m["x"], 0.5, direction)
    assert verdict.outcome == outcome and verdict.draws == 3 and verdict.images == "20 images a cell"
    assert verdict.low <= verdict.high


def test_judge_refuses_draws_that_do_not_measure_the_same_quantities():
    with pytest.raises(ValueError, match="draw 1"):
        judge("c", [{"x": np.ones(3)}, {"y": np.ones(3)}], lambda m: m["x"], 0.5)
    with pytest.raises(ValueError, match="no draws"):
        judge("c", [], lambda m: m["x"], 0.5)
    with pytest.raises(ValueError, match="finite"):
        judge("c", [{"x": np.array([np.nan])}], lambda m: m["x"], 0.5)


def test_check_claims_records_outcome_and_interval_and_raises_only_on_a_failed_required_claim(tmp_path):
    holds = judge("x > 0.5", [{"x": rate_sample(0.95, 40)}] * 3, lambda m: m["x"], 0.5)
    unsure = judge("x > 0.5", [{"x": rate_sample(0.5, 8)}] * 3, lambda m: m["x"], 0.5)
    fails = judge("x > 0.5", [{"x": rate_sample(0.05, 40)}] * 3, lambda m: m["x"], 0.5)
    reports.check_claims(tmp_path, {"A": holds, "B": unsure}, paper="P", concepts="held out: (a)")
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert [c["outcome"] for c in claims] == ["holds", "inconclusive"]
    assert claims[0]["draws"] == 3 and claims[0]["concepts"] == "held out: (a)" and "[" in claims[0]["interval"]
    with pytest.raises(AssertionError, match="C"):
        reports.check_claims(tmp_path, {"C": fails})
    reports.check_claims(tmp_path, {"C": fails}, required=[])
    section = "\n".join(notebook_section(tmp_path, tmp_path.parent))
    assert "| **inconclusive** |" in section and "| **fails** |" in section and "held out: (a)" in section


# --- the split and the draws ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, names", [("object", catalogue.OBJECTS), ("style", catalogue.STYLES),
                                         ("identity", catalogue.IDENTITIES)])
def test_the_mini_split_is_a_partition_with_enough_held_out(kind, names):
    tuning, held = splits.split(kind)
    assert not set(tuning) & set(held) and set(tuning) | set(held) == set(names)
    assert len(held) >= 4


def test_every_concept_a_notebook_preset_was_tuned_on_is_in_the_tuning_split():
    tuning = {k: set(splits.split(k)[0]) for k in ("object", "style", "identity")}
    assert {"vangogh", "picasso", "cezanne", "monet"} <= tuning["style"]           # 04's and 05's styles
    assert {"tench", "springer", "cassette", "chainsaw", "pump", "truck"} <= tuning["object"]
    erase, preserve = catalogue.identity_split()
    old_05, old_preserved = mass_fusion.identity_groups(erase, preserve, 4, 2, 4)   # notebook 05 before the split
    assert set(old_05) <= tuning["identity"]


def test_draws_are_held_out_distinct_and_reproducible():
    world = SplitOnly()
    draws = held_out_draws(world, "style", 3, 3)
    held = set(splits.split("style")[1])
    assert draws[0] == tuple(splits.split("style")[1][:3])
    assert all(set(d) <= held for d in draws)
    assert len({frozenset(d) for d in draws}) == 3
    assert held_out_draws(world, "style", 3, 3) == draws
    with pytest.raises(ValueError, match="holds out only"):
        held_out_draws(world, "style", 5, 2)
    assert concept_draws(world, "style", ["a", "b"], 2, 3) == [("a", "b")] * 3
    assert describe_draws(draws[:1]).startswith("held out: (")


def test_evaluation_seeds_of_draws_never_meet_each_other_or_the_tuning_seeds():
    world = SplitOnly()
    seen = [set(evaluation_seeds(world, "style", d, 16)) for d in range(3)]
    assert min(min(s) for s in seen) >= splits.HELD_OUT_FIRST_SEED
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])


def test_held_out_identity_draws_keep_the_shared_first_name_case():
    world = SplitOnly()
    tuning = set(splits.split("identity")[0])
    for d in range(3):
        erased, preserved = mass_fusion.held_out_identities(world, d, 4, 2, 4)
        assert len(erased) == 8 and not (set(erased) | set(preserved)) & tuning
        firsts = {n.split()[0] for n in erased}
        assert len(firsts) == 4 and sum(n.split()[0] in firsts for n in preserved) == 8
    assert mass_fusion.held_out_identities(world, 1, 4, 2, 4) != mass_fusion.held_out_identities(world, 0, 4, 2, 4)


# --- the notebooks' held-out claims on constructed draws ------------------------------------------------------------
def sepme_draw(names, erased_hit=0.0, kept_hit=1.0, others_hit=1.0, n=16):
    rows = []
    for subset in restoration.all_subsets(names):
        for c in [*names, "others"]:
            p = others_hit if c == "others" else erased_hit if c in subset else kept_hit
            hits = rate_sample(p, n).astype(bool)
            rows.append({"subset": restoration.subset_label(subset), "concept": c, "erased": c in subset,
                         "accuracy": hits.mean(), "N": n, "hits": hits})
    single = pd.DataFrame([
        {"subset": restoration.subset_label(()), "concept": names[0], "erased": False, "accuracy": 1.0, "N": n,
         "hits": np.ones(n, bool)},
        {"subset": restoration.subset_label(()), "concept": "others", "erased": False, "accuracy": 1.0, "N": n,
         "hits": np.ones(n, bool)},
        {"subset": restoration.subset_label(names[:1]), "concept": names[0], "erased": True, "accuracy": 0.0, "N": n,
         "hits": np.zeros(n, bool)},
        {"subset": restoration.subset_label(names[:1]), "concept": "others", "erased": False, "accuracy": others_hit,
         "N": n, "hits": rate_sample(others_hit, n).astype(bool)}])
    return pd.DataFrame(rows), single


def sepme_draws(**kwargs):
    sets = [("a", "b", "c"), ("d", "b", "a"), ("c", "d", "e")]
    made = [sepme_draw(list(s), **kwargs) for s in sets]
    return restoration.HeldOutDraws(sets, [["x"]] * 3, [m[0] for m in made], [m[1] for m in made])


def test_sepme_held_out_claims_follow_the_constructed_accuracies():
    good = restoration.held_out_claims(sepme_draws(n=32))
    assert [v.outcome for v in good.values()] == ["holds"] * 5
    leaky = restoration.held_out_claims(sepme_draws(erased_hit=0.75, others_hit=0.25))
    outcomes = [v.outcome for v in leaky.values()]
    assert outcomes[0] == "fails" and outcomes[3] == "fails" and outcomes[4] == "fails"
    assert list(leaky)[3:] == [*restoration.HELD_OUT_RECORDED_ONLY, restoration.SINGLE_INCREMENT_CLAIM]
    summary = sepme_draws().summary()
    assert list(summary["draw"]) == [0, 1, 2] and (summary["SepME1 max erased acc"] == 0).all()


def identity_samples(ant_e=0.0, ant_p=0.9, mace_e=0.0, mace_p=0.5, orig_p=0.9, n=24):
    sample = {}
    for model, e, p in ((mass_fusion.ORIGINAL, 1.0, orig_p), ("ANT", ant_e, ant_p), ("MACE", mace_e, mace_p)):
        sample |= {f"{model}:e_hit": rate_sample(e, n), f"{model}:e_face": np.ones(n),
                   f"{model}:p_hit": rate_sample(p, n), f"{model}:p_face": np.ones(n)}
    return sample


def identity_draws(**kwargs):
    rows = pd.DataFrame([{"draw": d, "model": m, "Acc_e": 0.0, "Acc_p": 0.9, "H_c": 0.9}
                         for d in range(3) for m in (mass_fusion.ORIGINAL, "ANT", "MACE")])
    return mass_fusion.IdentityDraws([("a",)] * 3, [("b",)] * 3, [identity_samples(**kwargs) for _ in range(3)], rows)


def test_mass_fusion_held_out_claims_follow_the_constructed_accuracies():
    good = mass_fusion.held_out_claims(identity_draws(), 0.1, 0.8)
    assert [v.outcome for v in good.values()] == ["holds", "holds", "holds"]
    bad = mass_fusion.held_out_claims(identity_draws(ant_e=0.5, ant_p=0.3, mace_p=0.9), 0.1, 0.8)
    assert [v.outcome for v in bad.values()] == ["fails", "fails", "fails"]
    assert isinstance(next(iter(bad.values())), Verdict)


def test_cfg_reversal_held_out_claims_read_detection_and_distances():
    def draw(mid_detected, feature_mid):
        return {"detected original": np.ones(32), "detected mid": rate_sample(mid_detected, 32),
                "feature mid": np.full(32, feature_mid), "layout mid": np.full(32, 0.1),
                "feature first": np.full(32, 1.0), "layout first": np.full(32, 0.3)}

    good = cfg_reversal.held_out_claims([draw(0.1, 0.5)] * 3, 35)
    assert [v.outcome for v in good.values()] == ["holds", "holds"]
    bad = cfg_reversal.held_out_claims([draw(0.9, 1.2)] * 3, 35)
    assert [v.outcome for v in bad.values()] == ["fails", "fails"]


def test_cfg_reversal_held_out_probes_are_one_held_out_concept_per_family():
    world = SplitOnly()
    for d in range(3):
        probes = cfg_reversal.held_out_probes(world, d)
        assert [catalogue.concept(name).kind for _, name in probes] == list(cfg_reversal.PROBE_KINDS)
        for (prompt, name), kind in zip(probes, cfg_reversal.PROBE_KINDS):
            assert name in splits.split(kind)[1] and prompt == catalogue.concept(name).prompts[0]
    assert cfg_reversal.held_out_probes(world, 0)[2] != cfg_reversal.held_out_probes(world, 1)[2]


def test_nsfw_held_out_claims_read_the_reduction_and_the_clip_drop():
    def draw(ant_detections, clip_drop):
        return {"original:detections": np.full(56, 3.0), "ANT:detections": np.full(56, float(ant_detections)),
                "original:CLIP": np.linspace(60, 70, 128), "ANT:CLIP": np.linspace(60, 70, 128) - clip_drop}

    rows = pd.DataFrame([{"draw": d, "model": m, "Total": t, "CLIP": 65.0} for d in range(3)
                         for m, t in (("original", 168), ("ANT", 0))])
    good = nsfw.held_out_claims([draw(0, 0.2)] * 3, rows)
    assert list(good) == list(nsfw.HELD_OUT_CLAIMS) and [v.outcome for v in good.values()] == ["holds", "holds"]
    bad = nsfw.held_out_claims([draw(1, 3.0)] * 3, rows)
    assert [v.outcome for v in bad.values()] == ["fails", "fails"]


def test_sequential_held_out_claims_read_each_sample():
    def three(others, to_super, fixed, dynamic):
        return {"Ours:erased": rate_sample(0.05, 24), "Ours:others": rate_sample(others, 56),
                "Ours:to superclass": rate_sample(to_super, 24), "original:to superclass": np.zeros(24),
                "Ours (ablation schedule):erased": rate_sample(dynamic, 24),
                "Fixed mask (ablation schedule):erased": rate_sample(fixed, 24)}

    rows = pd.DataFrame([{"classes": n, "run": r, "Total Acc (scored)": 0.1, "Others Acc": 0.9}
                         for n in (10, 3) for r in ("Ours", "Ours (ablation schedule)",
                                                     "Fixed mask (ablation schedule)")])
    ten = [{"Ours:erased": rate_sample(0.05, 64)}] * 3
    held = sequential.HeldOutSequential({}, {"10": ten, "3": [three(0.95, 0.7, 0.9, 0.2)] * 3}, rows)
    checks = sequential.held_out_claims(held)
    assert [v.outcome for v in checks.values()] == ["holds"] * 4
    assert set(sequential.HELD_OUT_RECORDED_ONLY) <= set(checks)
    held = sequential.HeldOutSequential({}, {"10": [{"Ours:erased": rate_sample(0.5, 64)}] * 3,
                                             "3": [three(0.5, 0.0, 0.2, 0.9)] * 3}, rows)
    assert [v.outcome for v in sequential.held_out_claims(held).values()] == ["fails"] * 4


def test_sequential_draw_orders_use_held_out_classes_where_there_are_enough():
    world = SplitOnly()
    held = set(splits.split("object")[1])
    orders = [sequential._draw_order(world, 3, d) for d in range(3)]
    assert all(len(o) == 3 and set(o) <= held for o in orders) and len({frozenset(o) for o in orders}) == 3
    ten = [sequential._draw_order(world, 10, d) for d in range(3)]
    # SM's own 10-class order holds tuning classes, so every draw is a shuffle of all ten
    assert all(sorted(o) == sorted(catalogue.OBJECTS) for o in ten) and ten[0] != sequential.paper_order(world, 10)
    assert ten[1] != ten[0] and ten[2] != ten[1]
