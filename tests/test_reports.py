"""Tables, figures and run records written by ``unlearnkit.reports``."""

import json
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from unlearnkit import reports


def test_report_dir_creates_preset_and_notebook_folders(tmp_path):
    out_dir = reports.report_dir("mini", "01_cfg_reversal", root=tmp_path / "reports")
    assert out_dir == tmp_path / "reports" / "mini" / "01_cfg_reversal"
    assert out_dir.is_dir()


def test_markdown_table_formats_floats_aligns_numbers_and_escapes_pipes():
    df = pd.DataFrame(
        {"method": ["ESD", "a|b"], "acc": [0.123456, 98.7], "fid": [12345.6, np.nan], "n": [3, 40]}
    )
    lines = reports.format_markdown_table(df).splitlines()
    assert lines[0] == "| method |    acc |   fid |   n |"
    assert lines[1] == "| ------ | -----: | ----: | --: |"
    assert lines[2] == "| ESD    | 0.1235 | 12346 |   3 |"
    assert lines[3] == "| a\\|b   |   98.7 |     — |  40 |"


def test_markdown_table_keeps_a_named_index():
    df = pd.DataFrame({"acc": [0.5, 0.25]}, index=pd.Index(["ESD", "ANT"], name="method"))
    lines = reports.format_markdown_table(df).splitlines()
    assert lines[0] == "| method |  acc |"
    assert lines[3] == "| ANT    | 0.25 |"


def test_write_table_writes_csv_and_markdown_with_caption(tmp_path):
    df = pd.DataFrame({"concept": ["cat", "dog"], "accuracy": [0.91, 0.07]})
    csv_path, md_path = reports.write_table(df, tmp_path, "accuracy", caption="Erased-class accuracy")
    assert (csv_path, md_path) == (tmp_path / "accuracy.csv", tmp_path / "accuracy.md")
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), df)
    markdown = md_path.read_text(encoding="utf-8")
    assert markdown.startswith("*Erased-class accuracy*\n\n| concept | accuracy |")
    assert "| dog     |     0.07 |" in markdown


def test_write_table_states_the_resolution_given_or_recorded_by_the_experiment(tmp_path):
    df = pd.DataFrame({"acc": [0.25, 0.5]})
    _, md = reports.write_table(df, tmp_path, "t", caption="a table", resolution="4 images a class: steps of 1/4")
    assert md.read_text().splitlines()[0] == "*a table; resolution: 4 images a class: steps of 1/4*"
    df.attrs["resolution"] = "8 images a class"             # set by the function that measured it
    _, md = reports.write_table(df, tmp_path, "u")
    assert md.read_text().splitlines()[0] == "*resolution: 8 images a class*"
    _, md = reports.write_table(df, tmp_path, "v", caption="c", resolution="16 images")   # the argument wins
    assert "16 images" in md.read_text() and "8 images" not in md.read_text()
    for bad in ("", "  ", 16):
        with pytest.raises(ValueError, match="resolution"):
            reports.write_table(df, tmp_path, "w", resolution=bad)


def test_every_committed_mini_table_states_its_resolution():
    """Issue #19 item 4: each table under reports/mini/ says what a cell rests on, in its caption."""
    root = Path(__file__).resolve().parents[1] / "reports" / "mini"
    tables = sorted(root.glob("*/*.md"))
    assert len(tables) > 30
    missing = [str(p.relative_to(root)) for p in tables
               if "resolution" not in p.read_text(encoding="utf-8").splitlines()[0].lower()]
    assert not missing, f"captions without a resolution: {missing}"


def test_image_grid_accepts_arrays_and_pil_and_saves_png(tmp_path):
    images = [
        [np.zeros((8, 8, 3), np.uint8), Image.new("RGB", (8, 8), "red")],
        [Image.new("L", (8, 8)), np.full((8, 8, 3), 255, np.uint8)],
    ]
    fig = reports.image_grid(images, ["SD", "erased"], ["seed 0", "seed 1"], title="grid")
    assert len(fig.axes) == 4
    path = reports.save_figure(fig, tmp_path, "grid")
    assert path == tmp_path / "grid.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_grid_rejects_mismatched_labels_and_bad_images():
    with pytest.raises(ValueError, match="2 rows of images for 1 row labels"):
        reports.image_grid([[np.zeros((4, 4, 3), np.uint8)]] * 2, ["a"], ["b"])
    with pytest.raises(ValueError, match="row 0, column 0"):
        reports.image_grid([[np.zeros((4, 4), np.float32)]], ["a"], ["b"])


def test_run_record_has_parameters_versions_and_git_and_round_trips(tmp_path):
    parameters = {
        "world": "mini",
        "model_path": Path("models/sd"),
        "seeds": (0, 1),
        "guidance": np.float32(7.5),
        "steps": np.int64(50),
        "dtype": torch.float16,
        "device": torch.device("cpu"),
    }
    path = reports.write_run_record(tmp_path, parameters, extra={"note": "test"}, started_at=time.time() - 2)
    record = json.loads(path.read_text(encoding="utf-8"))
    assert path == tmp_path / "run.json"
    assert record["parameters"] == {
        "world": "mini",
        "model_path": "models/sd",
        "seeds": [0, 1],
        "guidance": 7.5,
        "steps": 50,
        "dtype": "torch.float16",
        "device": "cpu",
    }
    assert record["extra"] == {"note": "test"}
    assert {"python", "torch", "diffusers", "numpy", "unlearnkit"} <= set(record["versions"])
    assert record["versions"]["torch"] == metadata.version("torch")
    assert isinstance(record["git"]["revision"], str)
    assert record["wall_time_s"] >= 2
    assert json.loads(json.dumps(record)) == record


def test_non_serialisable_parameter_raises_type_error_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match=r"parameters\.method\.schedule"):
        reports.write_run_record(tmp_path, {"method": {"schedule": object()}})
    with pytest.raises(TypeError, match=r"parameters\.seeds\[1\]"):
        reports.provenance({"seeds": [0, {1, 2}]})
    assert not (tmp_path / "run.json").exists()


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_git_state_reads_revision_and_dirty_flag_of_the_package_checkout(tmp_path):
    package_dir = tmp_path / "unlearnkit"
    package_dir.mkdir()
    (package_dir / "core.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    head = _git(tmp_path, "rev-parse", "HEAD")

    assert reports.git_state(package_dir) == {"revision": head, "dirty": False}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "table.csv").write_text("a\n")
    assert reports.git_state(package_dir)["dirty"] is False  # new outputs are not code changes
    (package_dir / "core.py").write_text("x = 2\n")
    assert reports.git_state(package_dir) == {"revision": head, "dirty": True}


def test_git_state_is_unknown_outside_a_checkout(tmp_path):
    package_dir = tmp_path / "unlearnkit"
    package_dir.mkdir()
    assert reports.git_state(package_dir) == {"revision": "unknown", "dirty": None}
