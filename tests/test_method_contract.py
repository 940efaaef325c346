"""One eraser contract (issue #17): every registered method declares the same shape, and a new eraser is one file
plus one registry line — it then runs through ``methods.erase``, ``unlearnkit erase``, a row of the erasure-step
benchmark and the notebooks' rows function (``experiments.baselines.fit_baselines``)."""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import textwrap
from pathlib import Path

import pytest
import torch

from unlearnkit import cli, methods
from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit
from unlearnkit.methods.contract import CAPABILITIES, INFERENCE, ONE, Erasure

ROOT = Path(__file__).resolve().parents[1]

TOY_ERASER = '''
"""Toy — a nudge of one cross-attention weight, learnt by a few Adam steps towards ``direction`` (the contract test)."""
from dataclasses import asdict, dataclass

import torch

from unlearnkit.core.edits import Edit
from unlearnkit.core.params import select_parameters
from unlearnkit.methods.contract import ONE, SEVERAL_JOINT, Erasure, Method, joint_concept


@dataclass(frozen=True)
class ToyConfig:
    """Toy hyperparameters: Adam's ``lr`` and the number of steps."""

    lr: float = 1e-2
    iterations: int = 3

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.iterations, int) and self.iterations > 0):
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def prepare(world, concepts, config=ToyConfig()) -> dict:
    """``{"direction": …}`` for fit."""
    return {"direction": torch.ones(1)}


def fit(world, concepts, config=ToyConfig(), *, progress=False, direction=None) -> Erasure:
    """Nudge the first attn2 to_k weight; several concepts: once on their joint concept."""
    concept = joint_concept(concepts, "Toy")
    name, weight = next(iter(select_parameters(world.pipe.unet, "xattn_kv").items()))
    direction = torch.ones(1) if direction is None else direction
    step = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([step], lr=config.lr)
    log = []
    for _ in range(config.iterations):
        loss = ((step - direction) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append({"loss": float(loss.detach())})
    delta = torch.full(weight.shape, float(step.detach()))
    edit = Edit({name: delta}, name=f"toy:{concept.name}", metadata={"method": "toy", "concept": concept.name})
    return Erasure([edit], log)


METHODS = (
    Method("toy", "Toy", "Toy: nudge one cross-attention weight (the contract test)", ToyConfig,
           frozenset({ONE, SEVERAL_JOINT}), fit, prepare=prepare),
)
'''


@pytest.fixture
def toy_registered(tmp_path, monkeypatch):
    """The toy eraser as one new file, and one registry line naming it."""
    package = tmp_path / "contract_toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "eraser.py").write_text(textwrap.dedent(TOY_ERASER))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(methods, "MODULES", (*methods.MODULES, "contract_toy.eraser"))
    return methods.get("toy")


# --- every registered method -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", methods.names())
def test_every_registered_method_declares_the_contract(name):
    method = methods.get(name)
    assert method.name == name and method.label.strip() and "\n" not in method.description
    assert method.description.strip() and method.capabilities <= CAPABILITIES and ONE in method.capabilities
    config = method.make_config()                       # the paper's defaults construct, with no model
    assert isinstance(config, method.config) and dataclasses.is_dataclass(config)
    assert isinstance(config.as_dict(), dict)
    assert methods.check_hyperparameters(name) == config
    parameters = inspect.signature(method.fit).parameters
    assert list(parameters)[:3] == ["world", "concepts", "config"]
    assert parameters["progress"].kind is inspect.Parameter.KEYWORD_ONLY and parameters["progress"].default is False
    if method.prepare is not None:
        assert list(inspect.signature(method.prepare).parameters)[:3] == ["world", "concepts", "config"]
    with pytest.raises(ValueError, match="no_such_key"):
        methods.check_hyperparameters(name, no_such_key=1)


def test_the_cli_lists_every_registered_method_with_its_description(capsys):
    with pytest.raises(SystemExit):
        cli.main(["erase", "--help"])
    out = capsys.readouterr().out
    for name, method in methods.registry().items():
        assert name in out and (INFERENCE in method.capabilities or method.description in out)


def test_flat_hyperparameters_build_the_nested_configs():
    ant = methods.check_hyperparameters("ant", lambda1=2.0, eta=3.0, saliency={"keep_fraction": 0.3, "seeds": [1, 2]})
    assert (ant.weights.lambda1, ant.weights.eta) == (2.0, 3.0)
    assert ant.saliency.threshold.keep_fraction == 0.3 and ant.saliency.seeds == (1, 2)
    assert methods.check_hyperparameters("ant").saliency is None        # no "saliency": the whole scope
    mace = methods.check_hyperparameters("mace", objective="mace", fusion={"beta": 4.0, "tokens": "concept"})
    assert mace.fusion.beta == 4.0 and mace.fusion.tokens == "concept" and mace.objective == "mace"
    assert methods.check_hyperparameters("esd-u").scope == "non_xattn"
    assert methods.check_hyperparameters("ant", bank=None).saliency is None   # fit inputs are not config keys
    sampler = methods.check_hyperparameters("ac", sampler={"num_inference_steps": 3}).sampler
    assert sampler.num_inference_steps == 3
    with pytest.raises(ValueError, match="bad hyperparameter"):
        methods.check_hyperparameters("mace", fusion={"beta": -1.0})
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.check_hyperparameters("nope")


def test_an_erasure_is_edits_log_info_and_not_a_tuple():
    one = Erasure([Edit({"w": torch.ones(2)}, name="a")], [{"loss": 1.0}], {"k": 1})
    assert one.edit.name == "a" and one.total() is one.edit
    with pytest.raises(TypeError):
        edit, info = one
    two = Erasure([Edit({"w": torch.ones(2)}, name="s0"), Edit({"w": torch.ones(2)}, name="s1")])
    with pytest.raises(ValueError, match="2 Edits"):
        two.edit
    assert torch.equal(two.total().deltas["w"], torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="no Edit"):
        Erasure([]).edit


def test_concept_counts_are_checked_before_any_compute():
    a = Concept("tench", ("a tench",), anchor="fish")
    b = Concept("church", ("a church",), anchor="building")
    with pytest.raises(ValueError, match="does not erase several"):
        methods.erase("ant", None, [a, b])
    with pytest.raises(ValueError, match="one concept per fit"):
        methods.get("ant").fit(None, [a, b], methods.get("ant").make_config())
    with pytest.raises(TypeError, match="wrap it in a list"):
        methods.get("esd-x").fit(None, a, methods.get("esd-x").make_config())
    with pytest.raises(ValueError, match="repeats"):
        methods.erase("uce", None, [a, a])


def test_sld_m_is_an_inference_time_erasure_with_no_edit():
    a = Concept("tench", ("a tench",), anchor="fish")
    b = Concept("church", ("a church",), anchor="building")
    erasure = methods.erase("sld-m", None, [a, b], sld_warmup_steps=0)
    assert erasure.edits == [] and erasure.info["sampling"]["safety_text"] == "tench, church"
    assert erasure.info["sampling"]["sld"].sld_warmup_steps == 0


# --- a toy eraser, one file + one registry line ---------------------------------------------------------------------
def test_a_toy_eraser_runs_through_erase(toy_registered, mini_world):
    assert "toy" in methods.names() and methods.label("toy") == "Toy"
    unet = mini_world.pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    erasure = methods.erase("toy", mini_world, mini_world.concept("tench"), iterations=2)
    assert len(erasure.log) == 2 and erasure.edit.name == "toy:tench" and erasure.edit.num_changed() > 0
    both = methods.erase("toy", mini_world, [mini_world.concept("tench"), mini_world.concept("church")],
                         direction=torch.full((1,), -1.0))
    assert both.edit.name == "toy:tench, church" and float(next(iter(both.edit.deltas.values())).max()) < 0
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    with pytest.raises(ValueError, match="lr must be > 0"):
        methods.erase("toy", mini_world, mini_world.concept("tench"), lr=0.0)


def test_a_toy_eraser_runs_through_the_cli(toy_registered, tmp_path, capsys):
    out = tmp_path / "toy"
    assert cli.main(["erase", "--method", "toy", "--concept", "tench", "--concept", "church", "--set",
                     "iterations=2", "--out", str(out)]) == 0
    record = json.loads((out / "erase.json").read_text())["parameters"]
    assert record["method"] == "toy" and record["concepts"] == ["tench", "church"]
    assert record["hyperparameters"] == {"iterations": 2}
    edit = Edit.load(out / "edit.safetensors")
    assert edit.name == "toy:tench, church" and len(edit.deltas) == 1
    assert "toy" in capsys.readouterr().out


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("erasure_steps_under_test", ROOT / "benchmarks" / "erasure_steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_toy_eraser_gets_a_benchmark_row(toy_registered, tmp_path, monkeypatch):
    bench = _load_benchmark()
    assert "toy" in bench.known_methods() and "sld-m" not in bench.known_methods()
    assert bench.method_hyperparameters("toy", "mini", 4) == {"iterations": 4}
    assert bench.needs_setup("toy", "mini")
    # the worker instruments torch's optimisers: keep that inside this test
    monkeypatch.setattr(torch.optim, "Adam", torch.optim.Adam)
    monkeypatch.setattr(torch.optim, "AdamW", torch.optim.AdamW)
    import torch.optim.optimizer as optimizer_module

    handles = []
    register = optimizer_module.register_optimizer_step_post_hook
    monkeypatch.setattr(optimizer_module, "register_optimizer_step_post_hook",
                        lambda hook: handles.append(register(hook)) or handles[-1])
    job = {"world": "mini", "device": "cpu", "threads": torch.get_num_threads(), "iterations": 4, "method": "toy",
           "data_path": str(tmp_path / "toy.pt")}
    try:
        setup = bench.worker({**job, "kind": "setup"})
        run = bench.worker({**job, "kind": "fit", "impl": "ours"})
    finally:
        for handle in handles:
            handle.remove()
    assert setup["data_s"] >= 0 and len(run["step_s"]) == 4 and len(run["losses"]) == 4
    entry = {"setup": setup, "ours": bench.summarise([run]), "config": bench._config_dict("toy", "mini", 4)}
    assert entry["config"] == {"lr": 1e-2, "iterations": 4}
    row = bench.table({"methods": {"toy": entry}})[-1]
    assert row.startswith("| toy | ") and row.count("|") == 9


def test_a_toy_eraser_is_a_row_of_the_notebooks_tables(toy_registered, mini_world):
    from unlearnkit.experiments.baselines import fit_baselines

    rows = fit_baselines(mini_world, mini_world.concept("tench"), ["toy", "sld-m"], {"toy": {"iterations": 1}})
    assert list(rows) == ["Toy", "SLD-M"]
    assert rows["Toy"].edit.name == "toy:tench" and len(rows["Toy"].log) == 1 and rows["Toy"].sampling() == {}
    assert rows["SLD-M"].edit is None and rows["SLD-M"].sampling()["safety_text"] == "tench"
    with pytest.raises(ValueError, match="toy"):
        fit_baselines(mini_world, mini_world.concept("tench"), ["toy"], {"toy": {"iterations": 0}})
