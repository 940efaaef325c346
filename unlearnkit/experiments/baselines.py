"""The baseline rows of a table: method names → the models to evaluate beside a paper's own method.

A row is either a weight :class:`~unlearnkit.core.edits.Edit` (every eraser of :data:`unlearnkit.methods.ERASERS`) or
Safe Latent Diffusion's guidance on the original weights (``"sld-m"``, nothing trained). :func:`fit_baselines`
checks every method's hyperparameters before any compute, then fits them one after another on the same concepts;
several concepts are erased at once (:func:`unlearnkit.methods.erase_many`, the 100-concept rows of ANT Tables 2–3).
Evaluate a row with ``benchmark.evaluate(row.label, row.edit, **row.sampling())``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit

__all__ = ["BaselineModel", "fit_baselines", "safety_text_for"]


@dataclass(frozen=True)
class BaselineModel:
    """One row: ``edit`` (``None`` for SLD-M and the original model) and, for SLD-M, its ``sld`` config and the
    safety concept ``safety_text`` it steers away from; ``seconds`` spent fitting; the eraser's ``info``."""

    name: str
    label: str
    edit: Edit | None = None
    sld: object | None = None
    safety_text: str | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def sampling(self) -> dict:
        """Keyword arguments for the benchmarks' ``evaluate`` (and :func:`unlearnkit.experiments.evaluation.generate_edited`)."""
        return {"sld": self.sld, "safety_text": self.safety_text} if self.sld is not None else {}


def safety_text_for(concepts: Sequence[Concept]) -> str | None:
    """SLD's safety concept c_S for erasing ``concepts``: ``None`` (the world's own c_S, SLD's inappropriate-content
    text) when they are all unsafe concepts, else their names joined by ", " — SLD steering away from the erased
    celebrities or artists, as in the SLD-M rows of ANT Tables 2–3. Like any prompt it is cut at the text encoder's
    length (77 tokens on SD v1.4, 16 in the mini world), so only the first names of a long list take part."""
    if all(c.kind == "unsafe" for c in concepts):
        return None
    return ", ".join(c.name for c in concepts)


def fit_baselines(world, concepts: Concept | Sequence[Concept], methods: Sequence[str],
                  method_hyperparameters: dict | None = None, settings=None,
                  progress: bool = False) -> dict[str, BaselineModel]:
    """Fit every method of ``methods`` on ``concepts`` (one Concept or several erased at once); keyed by label.

    ``method_hyperparameters[name]`` overrides the method's Config defaults; methods that generate training images
    sample them with ``settings`` unless their hyperparameters name a ``sampler``
    (:func:`unlearnkit.methods.with_sampler`). Bad names or values raise a ValueError before anything is fitted.
    """
    from unlearnkit import methods as erasers

    single = isinstance(concepts, Concept)
    concept_list = [concepts] if single else list(concepts)
    if not concept_list:
        raise ValueError("concepts is empty: give at least one concept to erase")
    hyperparameters = dict(method_hyperparameters or {})
    unknown = sorted(set(hyperparameters) - set(methods))
    if unknown:
        raise ValueError(f"method_hyperparameters names methods not in methods={list(methods)}: {unknown}")
    prepared = {}
    for name in methods:
        hp = erasers.with_sampler(name, hyperparameters.get(name), settings)
        prepared[name] = hp, erasers.check_hyperparameters(name, **hp)
    rows: dict[str, BaselineModel] = {}
    for name, (hp, config) in prepared.items():
        label = erasers.label(name)
        if name in erasers.INFERENCE_METHODS:   # the checked config is SLD's; nothing to fit
            rows[label] = BaselineModel(name, label, sld=config, safety_text=safety_text_for(concept_list))
            continue
        started = time.time()
        if single:
            edit, info = erasers.erase(name, world, concepts, progress=progress, **hp)
        else:
            edit, info = erasers.erase_many(name, world, concept_list, progress=progress, **hp)
        rows[label] = BaselineModel(name, label, edit=edit, seconds=time.time() - started, info=info or {})
    return rows
