"""Notebook 01's claims (ANT §3.1, Fig. 3) read from the sweep summary, and the t′ the notebook sweeps."""
import pandas as pd
import pytest

from unlearnkit.experiments import cfg_reversal
from unlearnkit.sampling import SamplerSettings

SETTINGS = SamplerSettings(num_inference_steps=50)


def summary(mid_detection=0.1, mid_feature=0.2):
    return pd.DataFrame({"t_prime": [0.0, 35.0, 50.0], "detection_rate": [0.9, mid_detection, 0.0],
                         "feature_distance": [0.0, mid_feature, 0.6], "layout_distance": [0.0, 0.1, 0.3]})


def test_sweep_covers_the_grid_the_curve_the_mid_point_and_the_first_step_once():
    assert cfg_reversal.sweep_t_primes([25, 35], [5, 25], 30, SETTINGS) == [5, 25, 30, 35, 50]


def test_key_points_and_claims():
    points = cfg_reversal.key_points(summary(), 35, SETTINGS)
    assert list(points.index) == ["original", "mid", "first"] and points["t_prime"].tolist() == [0.0, 35.0, 50.0]
    checks = cfg_reversal.claims(summary(), 35, SETTINGS)
    assert [holds for holds, _ in checks.values()] == [True, True]
    assert checks["reversing CFG from a mid t' (here 35) removes the prompted attribute"][1] == "detection 0.90 -> 0.10"
    failing = cfg_reversal.claims(summary(mid_detection=0.95, mid_feature=0.7), 35, SETTINGS)
    assert [holds for holds, _ in failing.values()] == [False, False]
    with pytest.raises(KeyError):
        cfg_reversal.claims(summary(), 20, SETTINGS)          # a t′ the sweep did not measure


def test_probes_from_a_preset_become_tuples_and_default_to_the_worlds():
    class World:
        def default_probes(self):
            return [("a photo of a tench", "tench")]

    assert cfg_reversal.probes_for(World(), [["a cat", "cat"]]) == [("a cat", "cat")]
    assert cfg_reversal.probes_for(World(), None) == [("a photo of a tench", "tench")]
