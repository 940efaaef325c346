"""reports/README.md is built from what the notebooks recorded: outputs, the paper tables they regenerate, verdicts."""
import pandas as pd
from matplotlib.figure import Figure

from unlearnkit import reports
from unlearnkit.reports.index import build_index, write_index


def test_index_lists_outputs_with_what_they_regenerate_and_the_verdicts(tmp_path):
    out = tmp_path / "mini" / "02_single_concept_nsfw"
    reports.write_table(pd.DataFrame({"method": ["original", "ant"], "Total": [40, 2]}).set_index("method"), out,
                        "table1_nsfw", caption="Detections | per label", regenerates="ANT Table 1")
    reports.save_figure(Figure(), out, "fig4", caption="active parameters", regenerates="ANT Fig. 4")
    reports.record_claim(out, "ANT erases nudity", False, "Total 40 -> 30", paper="ANT Table 1")
    reports.record_claim(out, "ANT erases nudity", True, "Total 40 -> 2", paper="ANT Table 1")   # replaces
    reports.write_run_record(out, {"world": "mini"}, started_at=0.0)
    index = build_index(tmp_path)
    assert "## Preset `mini`" in index and "### `02_single_concept_nsfw`" in index
    assert "[table1_nsfw.md](mini/02_single_concept_nsfw/table1_nsfw.md) | ANT Table 1 | Detections \\| per label" in index
    assert "| ANT Fig. 4 | active parameters |" in index
    assert "| ANT erases nudity (ANT Table 1) | agrees | — | Total 40 -> 2 |" in index and "| disagrees |" not in index
    assert "Verdicts (" not in index          # one draw, no interval: an observation, never a verdict
    assert write_index(tmp_path).read_text() == index


def test_verdicts_need_three_draws_and_check_scale_runs_stay_out(tmp_path):
    from unlearnkit.reports.verdicts import judge, rate_sample

    out = tmp_path / "mini" / "03_sequential_imagenette"
    three = judge("acc < 0.5", [{"acc": rate_sample(0.0, 16)}] * 3, lambda m: m["acc"], 0.5, "<")
    two = judge("acc < 0.5", [{"acc": rate_sample(0.0, 16)}] * 2, lambda m: m["acc"], 0.5, "<")
    reports.check_claims(out, {"erased on three draws": three, "erased on two draws": two}, concepts="held out: (a)")
    (tmp_path / "mini-ci" / "01_cfg_reversal").mkdir(parents=True)
    index = build_index(tmp_path)
    verdicts, observations = index.split("Observations on one draw")
    assert "| erased on three draws | **holds** | 0 [0, " in verdicts and "two draws" not in verdicts
    assert "| erased on two draws | agrees |" in observations
    assert "mini-ci" not in index


def test_outputs_without_a_manifest_entry_are_still_listed(tmp_path):
    out = tmp_path / "mini" / "01_cfg_reversal"
    out.mkdir(parents=True)
    (out / "old.md").write_text("x")
    assert "[old.md](mini/01_cfg_reversal/old.md) | — | — |" in build_index(tmp_path)
