"""The baseline rows of a table: method names → the models to evaluate beside a paper's own method.

A row is either a weight :class:`~unlearnkit.core.edits.Edit` (every method of the registry,
:mod:`unlearnkit.methods`) or an inference-time guidance on the original weights (``"sld-m"``, nothing trained).
:func:`fit_baselines` checks every method's hyperparameters before any compute, then fits them one after another on
the same concepts; several concepts are erased at once (:func:`unlearnkit.methods.erase`, the 100-concept rows of ANT
Tables 2–3).
Evaluate a row with ``benchmark.evaluate(row.label, row.edit, **row.sampling())``; :func:`evaluate_rows` builds the
table "the original and each model" that every notebook shows, and :func:`weight_edits` picks the rows an attack
can target.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import pandas as pd

from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit
from unlearnkit.methods.sld import safety_text_for

__all__ = ["BaselineModel", "fit_baselines", "safety_text_for", "evaluate_rows", "weight_edits"]


@dataclass(frozen=True)
class BaselineModel:
    """One row: ``edit`` (``None`` for SLD-M and the original model; the sum of the Edits of a method that makes
    several) and, for SLD-M, its ``sld`` config and the safety concept ``safety_text`` it steers away from;
    ``seconds`` spent fitting; the erasure's ``info`` and training ``log``."""

    name: str
    label: str
    edit: Edit | None = None
    sld: object | None = None
    safety_text: str | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    log: list = field(default_factory=list)

    def sampling(self) -> dict:
        """Keyword arguments for the benchmarks' ``evaluate`` (and :func:`unlearnkit.experiments.evaluation.generate_edited`)."""
        return {"sld": self.sld, "safety_text": self.safety_text} if self.sld is not None else {}


def fit_baselines(world, concepts: Concept | Sequence[Concept], methods: Sequence[str],
                  method_hyperparameters: dict | None = None, settings=None,
                  progress: bool = False) -> dict[str, BaselineModel]:
    """Fit every method of ``methods`` on ``concepts`` (one Concept or several erased at once); keyed by label.

    ``method_hyperparameters[name]`` overrides the method's Config defaults; methods that generate training images
    sample them with ``settings`` unless their hyperparameters name a ``sampler``
    (:func:`unlearnkit.methods.with_sampler`). Bad names or values raise a ValueError before anything is fitted.
    """
    from unlearnkit import methods as erasers

    concept_list = [concepts] if isinstance(concepts, Concept) else list(concepts)
    if not concept_list:
        raise ValueError("concepts is empty: give at least one concept to erase")
    hyperparameters = dict(method_hyperparameters or {})
    unknown = sorted(set(hyperparameters) - set(methods))
    if unknown:
        raise ValueError(f"method_hyperparameters names methods not in methods={list(methods)}: {unknown}")
    prepared = {}
    for name in methods:
        prepared[name] = erasers.with_sampler(name, hyperparameters.get(name), settings)
        erasers.check_hyperparameters(name, **prepared[name])
    rows: dict[str, BaselineModel] = {}
    for name, hp in prepared.items():
        label = erasers.label(name)
        started = time.time()
        erasure = erasers.erase(name, world, concept_list, progress=progress, **hp)
        seconds = time.time() - started
        if not erasure.edits:   # an inference-time method: its guidance is how the row samples
            rows[label] = BaselineModel(name, label, seconds=seconds, info=erasure.info, log=erasure.log,
                                        **erasure.info["sampling"])
        else:
            rows[label] = BaselineModel(name, label, edit=erasure.total(), seconds=seconds, info=erasure.info,
                                        log=erasure.log)
    return rows


def evaluate_rows(evaluate: Callable, models: Mapping[str, "Edit | BaselineModel | None"],
                  index: str = "method") -> tuple[pd.DataFrame, dict]:
    """One table row per entry of ``models``, in order: "the original model and each model" of a paper's table.

    A value is ``None`` (the original model), an :class:`~unlearnkit.core.edits.Edit`, or a :class:`BaselineModel`
    (its edit, and SLD-M's sampling). ``evaluate(label, edit, **sampling)`` returns ``(row, images)`` — the
    benchmarks' ``evaluate`` (:class:`~unlearnkit.experiments.evaluation.NSFWBenchmark`,
    :class:`~unlearnkit.experiments.mass_fusion.IdentityBenchmark`, ``StyleBenchmark``); each ``row`` holds its label
    under ``index``. Returns the table indexed by ``index`` and the images per label;
    ``table.attrs["seconds"]`` is each row's evaluation time.
    """
    if not models:
        raise ValueError("models is empty: give at least one model to evaluate")
    rows, images, seconds = [], {}, {}
    for label, model in models.items():
        started = time.time()
        if isinstance(model, BaselineModel):
            row, images[label] = evaluate(label, model.edit, **model.sampling())
        elif model is None or isinstance(model, Edit):
            row, images[label] = evaluate(label, model)
        else:
            raise TypeError(f"models[{label!r}] must be None, an Edit or a BaselineModel, got {type(model).__name__}")
        seconds[label] = time.time() - started
        rows.append(row)
    table = pd.DataFrame(rows).set_index(index)
    table.attrs["seconds"] = seconds
    return table, images


def weight_edits(models: Mapping[str, "Edit | BaselineModel | None"]) -> dict[str, Edit | None]:
    """The entries of ``models`` that are weights — the original (``None``), Edits, fitted baselines' edits — as
    ``label → Edit | None``, in order. SLD-M rows are dropped: they change the sampler, and the attacks sample
    plain CFG."""
    picked = {}
    for label, model in models.items():
        edit = model.edit if isinstance(model, BaselineModel) else model
        if isinstance(model, BaselineModel) and edit is None:
            continue
        picked[label] = edit
    return picked
