"""Presets are data: every key must be a parameter of its notebook and every method's settings must be valid."""
import ast
import json
from pathlib import Path

import nbformat
import pytest

from unlearnkit.methods import check_hyperparameters

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "unlearnkit" / "presets").glob("*.json"))


def _parameter_names(notebook: Path) -> set[str]:
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {target.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_keys_are_notebook_parameters_and_method_settings_are_valid(preset):
    for stem, parameters in json.loads(preset.read_text())["notebooks"].items():
        notebook = ROOT / "notebooks" / f"{stem}.ipynb"
        assert notebook.exists(), f"{preset.name}: no notebook {stem}"
        unknown = set(parameters) - _parameter_names(notebook)
        assert not unknown, f"{preset.name}: {stem} has no parameters {sorted(unknown)}"
        for method, hyperparameters in parameters.get("method_hyperparameters", {}).items():
            check_hyperparameters(method, **hyperparameters)   # sld-m included: its Config is the SLDConfig


def _notebook_defaults(stem: str) -> dict:
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {target.id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.Assign) for target in node.targets if isinstance(target, ast.Name)}


def test_erase_presets_name_registered_methods_and_valid_settings():
    from unlearnkit.methods import registry

    presets = json.loads((ROOT / "unlearnkit" / "presets" / "erase" / "settings.json").read_text())
    for world in ("mini", "paper"):
        for method, by_kind in presets[world].items():
            assert method in registry(), f"erase preset {world}: {method!r} is not a registered method"
            for settings in by_kind.values():
                check_hyperparameters(method, **settings)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_scale_of_a_preset_names_notebook_parameters_and_valid_settings(preset):
    for scale, notebooks in json.loads(preset.read_text()).get("scales", {}).items():
        for stem, parameters in notebooks.items():
            unknown = set(parameters) - _parameter_names(ROOT / "notebooks" / f"{stem}.ipynb")
            assert not unknown, f"{preset.name} scale {scale}: {stem} has no parameters {sorted(unknown)}"
            for method, hyperparameters in parameters.get("method_hyperparameters", {}).items():
                check_hyperparameters(method, **hyperparameters)


#: baseline rows whose published settings are not their Config's defaults: MACEConfig defaults to ANT's plug-in
#: (ANT Table 6); the MACE row of ANT Table 1 / SM Tables 1-4, 9 is MACE's own objective at its paper's lr
PUBLISHED_ELSEWHERE = {"mace": {"objective": "mace", "lr": 1e-4}}


def test_the_paper_preset_runs_the_published_settings_not_the_mini_tuned_ones():
    from unlearnkit.methods.mace import FusionConfig, MACEConfig

    paper = json.loads((ROOT / "unlearnkit" / "presets" / "paper.json").read_text())["notebooks"]
    for stem, parameters in paper.items():
        assert parameters["world"] == "paper"
        for method, hyperparameters in parameters.get("method_hyperparameters", {}).items():
            if method in PUBLISHED_ELSEWHERE:
                assert hyperparameters == PUBLISHED_ELSEWHERE[method], f"{stem}: {method} got {hyperparameters}"
                continue
            extra = set(hyperparameters) - {"saliency"}
            assert not extra and not hyperparameters.get("saliency"), \
                f"{stem}: {method} must run its Config defaults (its paper's settings), got {hyperparameters}"
    # every mini-tuned knob of a notebook's parameters cell is overridden by the published value
    assert paper["03_sequential_imagenette"]["sculpting"] == {} and paper["03_sequential_imagenette"]["ablation"] == {}
    assert paper["03_sequential_imagenette"]["single_class_hyperparameters"]["ant"] == paper[
        "02_single_concept_nsfw"]["method_hyperparameters"]["ant"] == {"saliency": {}}
    assert paper["04_sepme_restoration"]["sepme_base"] == "paper" and not paper["04_sepme_restoration"]["ac_hparams"]
    fusion = paper["05_mass_fusion"]
    mini = _notebook_defaults("05_mass_fusion")
    assert (fusion["lr"], fusion["iterations"]) == (MACEConfig().lr, MACEConfig().iterations)
    assert (fusion["beta"], fusion["lora_scale"]) == (FusionConfig().beta, FusionConfig().lora_scale)
    assert fusion["fusion_tokens"] == FusionConfig().tokens and fusion["prior_identity_weight"] == 1.0
    for key in ("lr", "lora_scale", "mace_lora_scale", "mace_lr", "beta", "prior_identity_weight", "fusion_tokens"):
        assert fusion[key] != mini[key], f"05_mass_fusion: the paper preset keeps the mini value of {key}"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_papermill_parses_every_parameter_line_without_a_warning(notebook, caplog):
    from papermill.translators import PythonTranslator

    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level("WARNING"):
        parsed = PythonTranslator.inspect(cell)
    assert not [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert {p.name for p in parsed} == _parameter_names(notebook)


def test_the_mini_ci_scale_is_what_the_tests_run_and_the_full_scale_resolves_more():
    """nbval runs the notebooks' defaults; ``--preset mini --scale ci`` must be the same run, and full only larger."""
    preset = json.loads((ROOT / "unlearnkit" / "presets" / "mini.json").read_text())
    for stem, parameters in preset["scales"]["ci"].items():
        defaults = _notebook_defaults(stem)
        assert parameters == {k: defaults[k] for k in parameters}, f"mini --scale ci differs from {stem}'s defaults"
        full = preset["notebooks"][stem]
        for key, value in parameters.items():
            size = len if isinstance(value, list) else (lambda v: v)
            assert size(full[key]) > size(value), f"{stem}: full {key} {full[key]} does not exceed ci's {value}"
        assert defaults["output_dir"] == f"../reports/mini-ci/{stem}"


def test_notebook_03_erases_single_classes_with_the_settings_the_cli_gives_an_object():
    """03's held-out single classes run ``erase --preset mini``'s object settings."""
    settings = json.loads((ROOT / "unlearnkit" / "presets" / "erase" / "settings.json").read_text())["mini"]
    nb02, nb03 = _notebook_defaults("02_single_concept_nsfw"), _notebook_defaults("03_sequential_imagenette")
    single = nb03["single_class_hyperparameters"]
    assert single["ant"] == settings["ant"]["object"] and nb02["method_hyperparameters"]["ant"] == settings["ant"]["*"]
    changed = {k for k in single["ant"] if single["ant"][k] != settings["ant"]["*"][k]}
    assert changed == {"iterations", "saliency"}          # 02's ANT with a sparser mask and more updates
    full = json.loads((ROOT / "unlearnkit" / "presets" / "mini.json").read_text())["notebooks"]["03_sequential_imagenette"]
    for method in full["single_class_methods"]:
        if method in ("ant", "sculpting", "uce"):
            continue
        by_kind = settings[method]
        preset = {k: v for k, v in by_kind.get("object", by_kind["*"]).items() if k != "sampler"}
        chosen = single.get(method, nb03["method_hyperparameters"].get(method))
        assert preset == chosen, f"{method}: CLI object preset {preset} differs from 03's {chosen}"
    paper = json.loads((ROOT / "unlearnkit" / "presets" / "paper.json").read_text())["notebooks"]
    assert paper["03_sequential_imagenette"]["single_class_hyperparameters"] == {"ant": {"saliency": {}}}


def test_notebook_05_erases_one_identity_with_the_cli_identity_preset():
    """The single-identity draws of 05 run ``erase --preset mini``'s identity setting, whose prior weighs the other
    identities as 05's fusion prior weighs the preserved ones; the paper preset runs MACEConfig's defaults."""
    settings = json.loads((ROOT / "unlearnkit" / "presets" / "erase" / "settings.json").read_text())["mini"]
    nb05 = _notebook_defaults("05_mass_fusion")
    assert nb05["single_identity_hyperparameters"] == settings["mace"]["identity"]
    fusion = settings["mace"]["identity"]["fusion"]
    assert (fusion["beta"], fusion["tokens"]) == (nb05["beta"], nb05["fusion_tokens"])
    assert fusion["preserve_others"] == nb05["prior_identity_weight"]
    assert "preserve_others" not in settings["mace"]["*"]["fusion"]      # objects keep MACE's captions-only prior
    paper = json.loads((ROOT / "unlearnkit" / "presets" / "paper.json").read_text())["notebooks"]["05_mass_fusion"]
    assert paper["single_identity_hyperparameters"] == {}


def test_notebook_04_fits_its_single_increment_with_the_cli_style_preset():
    """04's held-out single increment is ``erase --method sepme --preset mini`` on a style: the notebook's SepME preset
    with the other styles in the null space (chosen on tuning styles); objects and the paper preset keep SepME's A."""
    from unlearnkit.methods.sepme import SepMEConfig

    settings = json.loads((ROOT / "unlearnkit" / "presets" / "erase" / "settings.json").read_text())["mini"]["sepme"]
    nb04 = _notebook_defaults("04_sepme_restoration")
    assert nb04["sepme_base"] == "mini" and nb04["single_increment_hyperparameters"]["protect_others"] is True
    assert settings["style"] == {**settings["*"], **nb04["single_increment_hyperparameters"]}
    mini = SepMEConfig.for_mini_world().as_dict()
    assert all(mini[k] == v for k, v in settings["*"].items() if k != "sampler")
    assert "protect_others" not in settings["*"]
    paper = json.loads((ROOT / "unlearnkit" / "presets" / "paper.json").read_text())["notebooks"]
    assert paper["04_sepme_restoration"]["single_increment_hyperparameters"] == {}
