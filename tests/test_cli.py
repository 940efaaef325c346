"""``unlearnkit reproduce``: validation before compute, and papermill runs of throwaway notebooks."""

import contextlib
import io
import json

import nbformat
import pytest

from unlearnkit import cli

PARAMETERS_CELL = 'world = "unset"\ndevice = "unset"\noutput_dir = "unset"\n'

WRITE_RECEIVED_PARAMETERS = """\
import json, os, pathlib
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
received = {"world": world, "device": device, "output_dir": output_dir, "cwd": os.getcwd()}
(out / "received.json").write_text(json.dumps(received))
"""


def write_notebook(path, body: str) -> None:
    """A two-cell notebook: a cell tagged ``parameters``, then ``body``."""
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell(PARAMETERS_CELL)
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell(body)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(path))


@pytest.fixture
def notebooks_dir(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_cfg_reversal.ipynb", WRITE_RECEIVED_PARAMETERS)
    return folder


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if any notebook would be executed."""

    def refuse(*args, **kwargs):
        raise AssertionError("a notebook ran although the command line was invalid")

    monkeypatch.setattr(cli, "run_notebook", refuse)


def exit_status_and_stderr(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_unknown_preset_is_rejected_listing_accepted_presets(notebooks_dir, no_compute, capsys):
    status, stderr = exit_status_and_stderr(
        ["reproduce", "--preset", "huge", "--notebooks-dir", str(notebooks_dir)], capsys
    )
    assert status == 2
    assert "unknown preset 'huge'; accepted: mini, paper" in stderr


def test_unknown_only_is_rejected_listing_existing_notebooks(notebooks_dir, no_compute, capsys):
    argv = ["reproduce", "--preset", "mini", "--only", "01", "04", "--notebooks-dir", str(notebooks_dir)]
    status, stderr = exit_status_and_stderr(argv, capsys)
    assert status == 2
    assert f"--only 04: no such notebook in {notebooks_dir}; existing notebooks: 01_cfg_reversal" in stderr


def test_missing_notebooks_dir_is_rejected(tmp_path, no_compute, capsys):
    argv = ["reproduce", "--preset", "mini", "--notebooks-dir", str(tmp_path / "absent")]
    status, stderr = exit_status_and_stderr(argv, capsys)
    assert status == 2
    assert f"notebooks folder {tmp_path / 'absent'} does not exist" in stderr


def test_only_matches_number_prefix_stem_and_file_name():
    stems = ["01_cfg_reversal", "02_single_concept_nsfw"]
    assert cli.match_notebook("02", stems) == "02_single_concept_nsfw"
    assert cli.match_notebook("01_cfg_reversal", stems) == "01_cfg_reversal"
    assert cli.match_notebook("01_cfg_reversal.ipynb", stems) == "01_cfg_reversal"
    assert cli.match_notebook("03", stems) is None


def test_presets_name_only_known_notebooks_and_serialisable_parameters():
    known = {
        "01_cfg_reversal",
        "02_single_concept_nsfw",
        "03_sequential_imagenette",
        "04_sepme_restoration",
        "05_mass_fusion",
    }
    for name in cli.available_presets():
        preset = cli.load_preset(name)
        assert set(preset) <= known
        assert preset["01_cfg_reversal"]["world"] == name


@pytest.fixture(scope="module")
def reproduce_run(tmp_path_factory):
    """One ``reproduce`` call over a passing 01 and a failing 02 (two papermill runs in all)."""
    root = tmp_path_factory.mktemp("reproduce")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_cfg_reversal.ipynb", WRITE_RECEIVED_PARAMETERS)
    write_notebook(notebooks / "02_single_concept_nsfw.ipynb", 'assert 1 + 1 == 3, "deliberate failure"\n')
    output_dir = root / "reports"
    argv = [
        "reproduce",
        "--preset", "mini",
        "--notebooks-dir", str(notebooks),
        "--output-dir", str(output_dir),
        "--device", "cpu:0",   # a device this machine has, unlike the preset's "cpu" string
    ]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(argv)
    return {
        "status": status,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "notebooks": notebooks,
        "output_dir": output_dir,
    }


def test_reproduce_runs_notebook_with_injected_parameters(reproduce_run):
    preset_dir = reproduce_run["output_dir"] / "mini"
    received = json.loads((preset_dir / "01_cfg_reversal" / "received.json").read_text())
    assert received == {
        "world": "mini",
        "device": "cpu:0",
        "output_dir": str((preset_dir / "01_cfg_reversal").resolve()),
        "cwd": str(reproduce_run["notebooks"]),
    }
    executed = nbformat.read(str(preset_dir / "executed" / "01_cfg_reversal.ipynb"), as_version=4)
    injected = [cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and 'world = "mini"' in injected[0].source
    assert "skipping 03_sequential_imagenette" in reproduce_run["stdout"]


def test_failing_notebook_exits_1_naming_notebook_and_cell_keeping_earlier_outputs(reproduce_run):
    preset_dir = reproduce_run["output_dir"] / "mini"
    assert reproduce_run["status"] == 1
    stderr = reproduce_run["stderr"]
    assert "notebook 02_single_concept_nsfw failed at cell In [" in stderr
    assert "AssertionError: deliberate failure" in stderr
    assert "finished notebooks kept: 01_cfg_reversal" in stderr
    assert (preset_dir / "executed" / "02_single_concept_nsfw.ipynb").is_file()
    assert (preset_dir / "executed" / "01_cfg_reversal.ipynb").is_file()
    assert (preset_dir / "01_cfg_reversal" / "received.json").is_file()


# --------------------------------------------------------------------------------------------- --processes N

RENDEZVOUS = """\
import json, os, pathlib, time
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "started").write_text("")
sibling = out.parent / "{sibling}" / "started"
deadline = time.time() + 60          # both notebooks must be running at once for the sibling's file to appear
while not sibling.exists() and time.time() < deadline:
    time.sleep(0.1)
received = {{"saw_sibling": sibling.exists(), "omp": os.environ.get("OMP_NUM_THREADS"), "device": device}}
(out / "received.json").write_text(json.dumps(received))
"""


@pytest.mark.parametrize("value", ["0", "-2"])
def test_processes_below_one_is_rejected_before_any_work(value, notebooks_dir, tmp_path, no_compute, capsys):
    argv = ["reproduce", "--preset", "mini", "--notebooks-dir", str(notebooks_dir), "--processes", value,
            "--output-dir", str(tmp_path / "reports")]
    status, stderr = exit_status_and_stderr(argv, capsys)
    assert status == 2
    assert f"--processes {value}: must be an integer >= 1" in stderr
    assert not (tmp_path / "reports").exists()


def test_processes_must_be_an_integer(notebooks_dir, no_compute, capsys):
    argv = ["reproduce", "--preset", "mini", "--notebooks-dir", str(notebooks_dir), "--processes", "two"]
    status, stderr = exit_status_and_stderr(argv, capsys)
    assert status == 2 and "'two'" in stderr


def test_thread_environment_shares_the_cores_and_respects_explicit_settings(monkeypatch):
    for name in cli.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert cli.thread_environment(2, cores=16) == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}
    assert cli.thread_environment(4, cores=2) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli.thread_environment(2, cores=16)["OMP_NUM_THREADS"] == "3"


@pytest.fixture(scope="module")
def concurrent_run(tmp_path_factory):
    """``reproduce --processes 2`` over 01 and 02, which wait for each other to start; 02 then fails."""
    root = tmp_path_factory.mktemp("concurrent")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_cfg_reversal.ipynb", RENDEZVOUS.format(sibling="02_single_concept_nsfw"))
    write_notebook(notebooks / "02_single_concept_nsfw.ipynb",
                   RENDEZVOUS.format(sibling="01_cfg_reversal") + 'assert 1 + 1 == 3, "deliberate failure"\n')
    output_dir = root / "reports"
    argv = ["reproduce", "--preset", "mini", "--notebooks-dir", str(notebooks), "--output-dir", str(output_dir),
            "--processes", "2"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(argv)
    return {"status": status, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "preset_dir": output_dir / "mini", "environment": cli.thread_environment(2)}


def test_processes_runs_notebooks_at_the_same_time_with_shared_threads(concurrent_run):
    preset_dir = concurrent_run["preset_dir"]
    for stem in ("01_cfg_reversal", "02_single_concept_nsfw"):
        received = json.loads((preset_dir / stem / "received.json").read_text())
        assert received["saw_sibling"], f"{stem} never saw its sibling running"
        assert received["omp"] == concurrent_run["environment"]["OMP_NUM_THREADS"]
        assert received["device"] == "cpu"   # the preset's parameters were injected
        assert (preset_dir / "executed" / f"{stem}.ipynb").is_file()


def test_processes_failure_names_notebook_and_cell_and_keeps_the_other(concurrent_run):
    assert concurrent_run["status"] == 1
    stderr = concurrent_run["stderr"]
    assert "notebook 02_single_concept_nsfw failed at cell In [" in stderr
    assert "AssertionError: deliberate failure" in stderr
    assert "finished notebooks kept: 01_cfg_reversal" in stderr
    assert "all 2 notebooks finished" not in concurrent_run["stdout"]


def test_processes_runs_all_and_writes_the_index(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_cfg_reversal.ipynb", RENDEZVOUS.format(sibling="02_single_concept_nsfw"))
    write_notebook(notebooks / "02_single_concept_nsfw.ipynb", RENDEZVOUS.format(sibling="01_cfg_reversal"))
    output_dir = tmp_path / "reports"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = cli.main(["reproduce", "--preset", "mini", "--notebooks-dir", str(notebooks),
                           "--output-dir", str(output_dir), "--processes", "4"])
    assert status == 0
    assert "running up to 2 notebooks at once" in stdout.getvalue()
    assert "all 2 notebooks finished" in stdout.getvalue()
    assert (output_dir / "README.md").is_file()


# ------------------------------------------------------------------------------------------- erase and export


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model would be loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although the command line was invalid")

    monkeypatch.setattr(cli, "load_world_for", refuse)


@pytest.mark.parametrize("argv, named", [
    (["--method", "nope", "--concept", "tench"], "nope"),
    (["--method", "uce", "--concept", " "], "--concept"),
    (["--method", "ant", "--concept", "tench", "--concept", "church"], "one concept"),
    (["--method", "esd-x", "--concept", "tench", "--set", "lr=-1"], "lr"),
    (["--method", "esd-x", "--concept", "tench", "--set", "learning_rate=1"], "learning_rate"),
    (["--method", "sculpting", "--concept", "tench", "--set", "keep_fraction=1.5"], "keep_fraction"),
    (["--method", "uce", "--concept", "tench", "--set", "oops"], "KEY=VALUE"),
    (["--method", "uce", "--concept", "tench", "--model", "/no/such/folder"], "/no/such/folder"),
])
def test_erase_rejects_bad_input_before_loading_a_model(argv, named, tmp_path, no_model, capsys):
    status, stderr = exit_status_and_stderr(["erase", *argv, "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and named in stderr


def test_erase_refuses_a_non_empty_out_dir(tmp_path, no_model, capsys):
    (tmp_path / "keep.txt").write_text("x")
    status, stderr = exit_status_and_stderr(["erase", "--method", "uce", "--concept", "tench", "--out", str(tmp_path)],
                                            capsys)
    assert status == 2 and "not empty" in stderr


def test_export_rejects_bad_input_before_loading_a_model(tmp_path, no_model, capsys):
    status, stderr = exit_status_and_stderr(["export", str(tmp_path / "missing.safetensors"), "--format", "lora",
                                             "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "missing.safetensors" in stderr
    edit_file = tmp_path / "e.safetensors"
    edit_file.write_bytes(b"")
    status, stderr = exit_status_and_stderr(["export", str(edit_file), "--format", "onnx", "--out",
                                             str(tmp_path / "o")], capsys)
    assert status == 2 and "onnx" in stderr


def test_erase_then_export_lora_on_the_mini_world(tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from unlearnkit.core.edits import Edit

    out = tmp_path / "uce"
    assert cli.main(["erase", "--method", "uce", "--concept", "tench", "--out", str(out)]) == 0
    record = json.loads((out / "erase.json").read_text())
    assert record["parameters"]["method"] == "uce" and record["parameters"]["concepts"] == ["tench"]
    assert "git" in record and "versions" in record
    edit = Edit.load(out / "edit.safetensors")
    assert edit.deltas and all(".attn2.to_" in name for name in edit.deltas)
    assert cli.main(["export", str(out / "edit.safetensors"), "--format", "lora", "--out", str(tmp_path / "lora")]) == 0
    lora = load_file(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    assert len(lora) == 2 * len(edit.deltas) and all(key.startswith("unet.") for key in lora)


GPU_RENDEZVOUS = RENDEZVOUS.replace('"device": device}', '"device": device, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}')


def test_processes_give_each_notebook_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")   # a fake node with two GPUs
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_cfg_reversal.ipynb", GPU_RENDEZVOUS.format(sibling="02_single_concept_nsfw"))
    write_notebook(notebooks / "02_single_concept_nsfw.ipynb", GPU_RENDEZVOUS.format(sibling="01_cfg_reversal"))
    output_dir = tmp_path / "reports"
    status = cli.main(["reproduce", "--preset", "mini", "--notebooks-dir", str(notebooks), "--device", "cuda:1",
                       "--output-dir", str(output_dir), "--processes", "2"])
    assert status == 0
    received = [json.loads((output_dir / "mini" / stem / "received.json").read_text())
                for stem in ("01_cfg_reversal", "02_single_concept_nsfw")]
    assert all(r["saw_sibling"] for r in received)               # they ran at the same time ...
    assert sorted(r["gpu"] for r in received) == ["3", "5"]      # ... each on its own GPU
    assert all(r["device"] == "cuda" for r in received)          # the one device the process sees


def test_concepts_lists_a_world_by_kind_without_loading_a_model(no_model, capsys):
    assert cli.main(["concepts", "--world", "mini", "--kind", "object"]) == 0
    out = capsys.readouterr().out
    assert "tench" in out and "fish" in out and "10 concepts in the mini world" in out
    assert cli.main(["concepts", "--world", "paper", "--kind", "identity"]) == 0
    assert "200 concepts in the paper world" in capsys.readouterr().out
    status, stderr = exit_status_and_stderr(["concepts", "--kind", "animal"], capsys)
    assert status == 2 and "--kind 'animal'" in stderr


def test_erase_preset_evaluate_and_several_concepts_on_the_mini_world(tmp_path, capsys):
    out = tmp_path / "esd"
    assert cli.main(["erase", "--method", "esd-x", "--concept", "warhol", "--set", "iterations=3",
                     "--out", str(out)]) == 0
    record = json.loads((out / "erase.json").read_text())["parameters"]
    assert record["preset"] == "mini"                                   # the --model's world by default
    assert record["hyperparameters"] == {"lr": 3e-4, "iterations": 3, "num_inference_steps": 10}   # 04's, then --set
    assert cli.main(["evaluate", str(out / "edit.safetensors"), "--images", "2", "--captions", "2"]) == 0
    printed = capsys.readouterr().out
    assert "warhol" in printed and "CLIP original" in printed
    rows = json.loads((out / "evaluate.json").read_text())["extra"]["rows"]
    assert [r["role"] for r in rows] == ["erased", "kept", "kept", "kept"] and rows[0]["concept"] == "warhol"
    assert all(0 <= r["original detected"] <= 1 and 0 <= r["edited detected"] <= 1 for r in rows)
    assert json.loads((out / "evaluate.json").read_text())["parameters"]["sampler"]["num_inference_steps"] == 50
    assert cli.main(["evaluate", str(out / "edit.safetensors"), "--images", "2", "--captions", "2", "--steps", "4",
                     "--first-seed", "50000", "--kept", "monet", "--out", str(tmp_path / "ev")]) == 0
    parameters = json.loads((tmp_path / "ev" / "evaluate.json").read_text())["parameters"]
    assert parameters["sampler"]["num_inference_steps"] == 4 and parameters["first_seed"] == 50000
    assert parameters["kept"] == ["monet"]
    for flag in (["--steps", "0"], ["--first-seed", "-1"]):
        status, stderr = exit_status_and_stderr(["evaluate", str(out / "edit.safetensors"), *flag], capsys)
        assert status == 2 and flag[0] in stderr
    many = tmp_path / "uce"
    assert cli.main(["erase", "--method", "uce", "--concept", "tench", "--concept", "church", "--preset", "paper",
                     "--out", str(many)]) == 0
    record = json.loads((many / "erase.json").read_text())["parameters"]
    assert record["concepts"] == ["tench", "church"] and record["hyperparameters"] == {}


def test_erase_checks_presets_samplers_and_concepts_before_loading_a_model(tmp_path, no_model, capsys):
    base = ["erase", "--out", str(tmp_path / "x")]
    status, stderr = exit_status_and_stderr(base + ["--method", "ac", "--concept", "tench", "--set",
                                                    'sampler={"num_inference_steps": 0}'], capsys)
    assert status == 2 and "num_inference_steps" in stderr
    status, stderr = exit_status_and_stderr(base + ["--method", "fmn", "--concept", "not a concept"], capsys)
    assert status == 2 and "'not a concept'" in stderr and "unlearnkit concepts" in stderr
    status, stderr = exit_status_and_stderr(base + ["--method", "ant", "--concept", "tench", "--concept", "church"],
                                            capsys)
    assert status == 2 and "one concept per run" in stderr and "gcirs" in stderr   # G-CiRs takes several
    status, stderr = exit_status_and_stderr(base + ["--method", "sld-m", "--concept", "nudity"], capsys)
    assert status == 2 and "changes sampling" in stderr


def test_lora_export_of_an_edit_with_biases_is_refused_before_the_model_loads(tmp_path, no_model, capsys):
    import torch

    from unlearnkit.core.edits import Edit

    path = Edit({"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.bias": torch.ones(4),
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.ones(4, 4)},
                name="esd-x:tench").save(tmp_path / "edit.safetensors")
    status, stderr = exit_status_and_stderr(["export", str(path), "--format", "lora", "--out", str(tmp_path / "l")],
                                            capsys)
    assert status == 2 and "to_out.0.bias" in stderr and "--format diffusers" in stderr
