"""The CLI acceptance check (issue #19) reads the notebooks' intervals and compares what the CLI measures."""
import json

import pandas as pd
import pytest

from unlearnkit.core.errors import UnlearnkitError
from unlearnkit.experiments import cli_acceptance as ca


def _claims(folder, entries):
    folder.mkdir(parents=True)
    (folder / "claims.json").write_text(json.dumps(entries))


def test_intervals_are_read_from_claims_json_and_a_value_is_within_only_inside_them(tmp_path):
    with pytest.raises(UnlearnkitError, match="claims.json is missing"):
        ca.notebook_interval(tmp_path, "03_x", "a claim")
    _claims(tmp_path / "03_x", [{"claim": "a claim", "holds": True, "evidence": ""},      # one draw: no interval
                                {"claim": "b claim", "estimate": 0.2, "low": 0.1, "high": 0.3, "outcome": "fails"}])
    with pytest.raises(UnlearnkitError, match="no verdict with an interval on 'a claim'"):
        ca.notebook_interval(tmp_path, "03_x", "a claim")
    verdict = ca.notebook_interval(tmp_path, "03_x", "b claim")
    assert ca.compare(0.3, verdict)["within"] and ca.compare(0.1, verdict)["within"]
    assert not ca.compare(0.31, verdict)["within"] and not ca.compare(0.0, verdict)["within"]
    assert ca.compare(0.25, verdict)["notebook 95 % interval"] == "[0.100, 0.300]"
    # a clean 0 is below [0.1, 0.3]; it is consistent with it only when its own interval reaches 0.1
    assert ca.compare(0.0, verdict, (0.0, 0.14))["consistent"] and not ca.compare(0.0, verdict, (0.0, 0.14))["within"]
    assert not ca.compare(0.0, verdict, (0.0, 0.05))["consistent"]
    assert ca.compare(0.2, verdict)["consistent"] and not ca.compare(0.5, verdict, (0.31, 0.7))["consistent"]


def test_cli_interval_reads_a_rate_at_its_image_count_as_the_notebooks_bootstrap_does():
    rows = pd.DataFrame({"edited detected": [0.0], "original detected": [1.0]})
    value, low, high = ca.cli_interval(rows, 16)
    assert value == 0.0 and low == 0.0 and 0.08 < high < 0.2          # Jeffreys Beta(0.5, 16.5): 97.5 % ≈ 0.146
    wide = ca.cli_interval(rows, 4)[2]
    assert wide > high                                                  # fewer images, a wider interval
    kept = pd.DataFrame({"edited detected": [0.5, 0.75], "original detected": [1.0, 1.0]})
    value, low, high = ca.cli_interval(kept, 16, ratio=True)
    assert value == pytest.approx(0.625) and low < 0.625 < high and high <= 1.0


def test_a_check_keeps_held_out_or_every_concept_of_its_kind():
    with pytest.raises(ValueError, match="kept_from"):
        ca.Check("object", "ant", "03_x", 10, None, "k", kept_from="tuning")
    assert [c.kept_from for c in ca.CHECKS if c.kind == "object"] == ["all"]   # 03 scores every other class


def test_run_checks_erases_held_out_concepts_and_compares_erased_kept_and_ratio(tmp_path, monkeypatch):
    check = ca.Check("style", "sepme", "04_x", 10, "erased claim", "kept claim", kept_ratio=True, concepts=2, kept=2)
    _claims(tmp_path / "04_x", [{"claim": "erased claim", "estimate": 0.1, "low": 0.0, "high": 0.2},
                                {"claim": "kept claim", "estimate": 0.5, "low": 0.4, "high": 0.6}])
    calls = []

    def fake(world, check, name, kept, images, work):
        calls.append((name, tuple(kept)))
        return pd.DataFrame({"concept": [name, *kept], "role": ["erased"] + ["kept"] * len(kept),
                             "original detected": [1.0] + [0.75] * len(kept),
                             "edited detected": [0.25] + [0.375] * len(kept)})

    monkeypatch.setattr(ca, "_erase_and_evaluate", fake)
    table = ca.run_checks(tmp_path, [check], images=8, work=tmp_path / "work")
    held = ("kandinsky", "warhol", "hokusai", "klimt")                       # the mini world's held-out styles
    assert [c[0] for c in calls] == ["kandinsky", "hokusai"]       # spread over the held-out styles
    assert all(name not in kept and set(kept) <= set(held) and len(kept) == 2 for name, kept in calls)
    erased = table[table.quantity == "erased acc"]
    assert list(erased.CLI) == [0.25, 0.25] and not erased.within.any()     # 0.25 is outside [0, 0.2]
    assert erased.consistent.all()                                  # but 2 of 8 images are not sure to be above it
    ratio = table[table.quantity == "kept acc / original"]
    assert list(ratio.CLI) == [0.5, 0.5] and ratio.within.all()             # 0.375 / 0.75 inside [0.4, 0.6]
    calls.clear()
    assert len(ca.run_checks(tmp_path, [check], images=4, work=tmp_path / "work", concepts=1)) == 2
    assert [c[0] for c in calls] == ["kandinsky"]
    calls.clear()
    every = ca.Check("object", "ant", "04_x", 10, "erased claim", "kept claim", concepts=1, kept_from="all")
    ca.run_checks(tmp_path, [every], images=4, work=tmp_path / "work")
    assert calls == [("church", ("tench", "springer", "cassette", "chainsaw", "horn", "truck", "pump", "golfball",
                                 "parachute"))]                         # tuning classes too, as notebook 03 scores
    with pytest.raises(UnlearnkitError, match="no verdict"):
        ca.run_checks(tmp_path, [ca.Check("style", "sepme", "04_x", 10, "other claim", None)])


def test_every_acceptance_check_names_a_verdict_the_committed_full_scale_reports_record():
    """The claims the check reads exist, with an interval, in reports/mini/ (the reports the check runs against)."""
    from pathlib import Path

    reports = Path(__file__).resolve().parents[1] / "reports" / "mini"
    for check in ca.CHECKS:
        for claim in (check.erased_claim, check.kept_claim):
            if claim:
                verdict = ca.notebook_interval(reports, check.notebook, claim)
                assert verdict["draws"] >= 3 and verdict["low"] <= verdict["estimate"] <= verdict["high"]
