"""The tuning sweeps (unlearnkit.experiments.tuning) run on the tuning split only."""
import pandas as pd
import pytest

from unlearnkit.core.errors import UnlearnkitError
from unlearnkit.experiments import tuning


def test_a_sweep_refuses_a_held_out_concept_before_any_erasure(mini_world):
    held = mini_world.concept_split("object").held_out[0]
    with pytest.raises(UnlearnkitError, match="not tuning object"):
        tuning.single_concept_sweep(mini_world, "object", "uce", [{}], [held])
    with pytest.raises(UnlearnkitError, match="not tuning identity"):
        tuning.tuning_concepts(mini_world, "identity", [mini_world.concept_split("identity").held_out[0]])
    assert tuning.tuning_concepts(mini_world, "object") == list(mini_world.concept_split("object").tuning)


def test_sweep_rows_score_the_erased_concept_and_the_other_tuning_ones(mini_world, tmp_path):
    rows = tuning.single_concept_sweep(mini_world, "object", "uce", [{}, {"tokens": "all"}], ["springer"],
                                       ["springer", "truck", "pump"], images=1, steps=2, cache_dir=tmp_path)
    assert len(rows) == 2 and set(rows.erased) == {"springer"} and set(rows["kept concepts"]) == {2}
    assert rows[["erased acc", "others acc"]].isin([0.0, 0.5, 1.0]).all().all()   # 1 image, 2 kept: steps of 1/2


def test_choose_puts_settings_that_meet_both_bars_first():
    rows = pd.DataFrame({"setting": ["a", "a", "b", "b", "c", "c"], "erased": ["x", "y"] * 3,
                         "erased acc": [0.0, 0.1, 0.0, 0.0, 0.4, 0.4], "others acc": [0.9, 0.9, 0.5, 0.5, 1.0, 1.0]})
    summary = tuning.choose(rows)
    assert list(summary.setting) == ["a", "c", "b"] and list(summary.meets) == [True, False, False]
    assert summary.loc[0, "worst erased"] == 0.1 and summary.loc[0, "concepts"] == 2


def test_grid_points_merge_nested_settings_into_the_base():
    base = {"lr": 1.0, "fusion": {"beta": 4.0, "lora_scale": 36.0}}
    assert tuning._merge(base, {"fusion": {"lora_scale": 72.0}}) == {"lr": 1.0, "fusion": {"beta": 4.0,
                                                                                          "lora_scale": 72.0}}
    assert base["fusion"]["lora_scale"] == 36.0
