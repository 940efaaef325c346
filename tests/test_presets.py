"""Presets are data: every key must be a parameter of its notebook and every method's settings must be valid."""
import ast
import json
from pathlib import Path

import nbformat
import pytest

from unlearnkit.methods import check_hyperparameters
from unlearnkit.sld import SLDConfig

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
            if method == "sld-m":
                SLDConfig(**hyperparameters)
            else:
                check_hyperparameters(method, **hyperparameters)
