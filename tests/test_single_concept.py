"""One held-out concept erased alone per draw (unlearnkit.experiments.single_concept)."""
import numpy as np
import pandas as pd
import pytest

from unlearnkit.experiments import single_concept as sc


def test_kept_identities_are_held_out_half_share_the_first_name_and_never_the_erased(mini_world):
    split = mini_world.concept_split("identity")
    kept = sc.kept_concepts(mini_world, "identity", split.held_out[0], 8)
    first = split.held_out[0].split()[0]
    assert len(kept) == len(set(kept)) == 8 and split.held_out[0] not in kept
    assert set(kept) <= set(split.held_out)
    assert sum(k.split()[0] == first for k in kept) == 4


def _draws(erased, kept, original_kept):
    samples = [{"erased": np.array(e, float), "kept": np.array(k, float), "original:erased": np.ones(len(e)),
                "original:kept": np.array(o, float)} for e, k, o in zip(erased, kept, original_kept)]
    rows = pd.DataFrame([{"draw": d, "erased": f"c{d}", "model": "MACE", "erased acc": s["erased"].mean(),
                          "kept / original": s["kept"].mean() / s["original:kept"].mean()}
                         for d, s in enumerate(samples)])
    return sc.SingleConceptDraws("identity", "mace", [f"c{d}" for d in range(len(samples))], [], samples, rows)


def test_claims_hold_when_erased_and_kept_and_fail_when_everything_is_erased():
    ones, zeros = [1] * 32, [0] * 32
    good = sc.single_concept_claims(_draws([[0] * 16] * 3, [ones] * 3, [ones] * 3), 0.1, 0.8)
    assert [v.outcome for v in good.values()] == ["holds", "holds"]
    wiped = sc.single_concept_claims(_draws([[0] * 16] * 3, [zeros] * 3, [ones] * 3), 0.1, 0.8)
    assert [v.outcome for v in wiped.values()] == ["holds", "fails"]
    kept_only = sc.single_concept_claims(_draws([[1] * 16] * 3, [ones] * 3, [ones] * 3), 0.1, 0.8)
    assert list(kept_only.values())[0].outcome == "fails"


def test_single_concept_draws_erase_one_held_out_concept_per_draw(mini_world, tmp_path):
    from unlearnkit.sampling import SamplerSettings

    result = sc.single_concept_draws(mini_world, "object", "uce", {}, 2, 1, SamplerSettings(num_inference_steps=2),
                                     tmp_path, kept=2)
    held = mini_world.concept_split("object").held_out
    assert len(result.concepts) == 2 and set(result.concepts) <= set(held)
    assert all(len(k) == 2 and c not in k for c, k in zip(result.concepts, result.kept))
    assert list(result.rows.model) == ["original", "UCE"] * 2
    assert all(s["kept"].size == 2 and s["erased"].size == 1 for s in result.samples)
    with pytest.raises(ValueError, match="images"):
        sc.single_concept_draws(mini_world, "object", "uce", {}, 1, 0, None, tmp_path)
