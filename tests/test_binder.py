"""Binder: ``binder/`` must build an environment that installs unlearnkit and opens notebook 01 on the mini world.

repo2docker cannot run here, so these tests read the files: the environment parses and lists what pyproject.toml
needs, postBuild is executable and installs the package, and every link into Binder points at notebook 01.
"""
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
NOTEBOOK_01 = "notebooks/01_cfg_reversal.ipynb"


def requirement_name(requirement: str) -> str:
    """``"diffusers>=0.30"`` -> ``"diffusers"``, normalised as pip does (PEP 503)."""
    name = re.split(r"[\s<>=!~\[;@]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_requirements(environment: dict) -> list[str]:
    """The pip section of a conda environment file, option lines (``--extra-index-url …``) left out."""
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, f"expected one pip section, got {sections}"
    return [r for r in sections[0] if not r.startswith("-")]


def test_binder_environment_parses_and_lists_every_pyproject_dependency():
    environment = yaml.safe_load((BINDER / "environment.yml").read_text(encoding="utf-8"))
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=") for d in conda) and "pip" in conda
    python = next(d for d in conda if d.startswith("python=")).split("=", 1)[1]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, minimum.split(".")))
    listed = {requirement_name(r) for r in pip_requirements(environment)}
    needed = {requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    assert needed <= listed, f"binder/environment.yml lacks {sorted(needed - listed)}"
    assert "jupyterlab" in conda or "jupyterlab" in listed   # the Binder link opens JupyterLab


def test_root_environment_parses_and_installs_the_package():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert any(r.replace(" ", "").startswith("-e.") for r in
               next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict)))


def test_post_build_is_executable_and_installs_the_package():
    post_build = BINDER / "postBuild"
    text = post_build.read_text(encoding="utf-8")
    assert text.startswith("#!/"), "postBuild needs a shebang line"
    assert os.access(post_build, os.X_OK), "postBuild is not executable in this checkout"
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-s", "binder/postBuild"], cwd=ROOT, capture_output=True,
                                text=True).stdout
        if listed:  # tracked: the mode Binder sees is the committed one
            assert listed.startswith("100755 "), f"binder/postBuild is committed without the executable bit: {listed}"
    commands = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    installs = [c for c in commands if re.match(r"(python3? -m )?pip install\b", c)]
    assert installs and all(re.search(r"(-e )?\.(\[[a-z,]+\])?$", c) for c in installs), installs
    # nothing fetched from anywhere but the package registries pip is configured with
    assert not any(re.search(r"\b(curl|wget|git clone)\b", c) for c in commands), commands


def test_binder_opens_notebook_01():
    assert (ROOT / NOTEBOOK_01).is_file()
    default_url = re.search(r'default_url\s*=\s*"([^"]+)"', (BINDER / "postBuild").read_text(encoding="utf-8"))
    assert default_url and default_url.group(1).endswith(NOTEBOOK_01)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"(?:mybinder\.org/v2/[^\s)`\"]+|\?urlpath=[^\s)`\"]+)", readme)
    assert links, "README says nothing about how to open the repository on Binder"
    for link in links:
        assert "urlpath=" in link and link.split("urlpath=", 1)[1].split("&")[0].endswith(NOTEBOOK_01), link
