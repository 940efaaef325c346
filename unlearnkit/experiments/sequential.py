"""Stage-by-stage evaluation of sequential multi-concept forgetting — Sculpting Memory Tables 1, 2, 9 (and 5, 8,
Fig. 5, the fixed-vs-dynamic ablation, which report the same numbers for other settings).

The protocol (SM §4.1 and its release): classes are forgotten one after another; after stage ``i``
the model is the original plus the sum of the first ``i`` stage Edits. We measure, on images of every class
(``seeds_per_class`` images each, prompts cycled from the class's own prompts):

* per-class top-1 accuracy — after every stage, which gives the stage × class heat-map, and after the last stage
  the per-class columns of Tables 1, 2 and 9;
* ``Total Acc`` — mean accuracy over the erased classes (Table 1: lower is better; "Ours" 0.084);
* ``Others Acc`` — mean accuracy over the classes not erased (Tables 2 and 9; higher is better);
* the **superclass rate** — on images of the erased classes, the fraction the superclass head labels as the class's
  superclass (SM §3.3 maps a class onto its superclass ``C_s``), and the fraction **forgotten to the superclass**:
  labelled as the superclass *and* no longer as the class itself (in the mini world an object *is* its
  superclass's shape in its own colour, so the superclass head fires on the object too; only the second rate
  separates "drawn as a generic member of the superclass" from "still the object");
* ``CLIP`` — mean CLIP score on held-out generic captions (the COCO analogue; Table 1's last column);
* attack success rates (not in SM; issue 10) — for a few erased classes, how often a concept-vector or soft-prompt
  attack on the class's prompts brings the class back (:func:`attack_erased_classes`), beside the plain-prompt rate.

Single-concept baselines (ERASERS: ESD-x, AC, UCE, …) follow the same protocol through
:func:`fit_sequential_baseline`: stage ``i`` runs the eraser on the model with the Edits of stages ``< i`` applied,
so each stage's Edit is relative to the model it started from and the Edits sum, exactly like Sculpting Memory's
(:func:`unlearnkit.methods.sculpting.fit`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from unlearnkit.attacks.success import RATE_LABELS as ATTACK_RATES  # the tables' rate column names
from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit
from unlearnkit.experiments.evaluation import generate_edited
from unlearnkit.metrics.classification import OTHERS_ACC, TOTAL_ACC, classifier_accuracy
from unlearnkit.metrics.clip_score import mean_clip_score

__all__ = [
    "TOTAL_ACC",
    "OTHERS_ACC",
    "SUPERCLASS_RATE",
    "FORGOTTEN_TO_SUPERCLASS",
    "ClassPrompts",
    "class_prompts",
    "object_classes",
    "object_classifier",
    "imagenette_names",
    "paper_order",
    "ClassEvaluation",
    "evaluate_classes",
    "stage_accuracy",
    "generic_clip",
    "cumulative_edits",
    "fit_sequential_baseline",
    "ATTACK_RATES",
    "attack_erased_classes",
    "mean_attack_rates",
    "heatmap_figure",
    "sweep_figure",
]

SUPERCLASS_RATE = "superclass rate"
FORGOTTEN_TO_SUPERCLASS = "forgotten to superclass"
EVAL_SEED_OFFSET = 10_000   # evaluation seeds never share an initial noise with training images (seeds 0, 1, …)


# --- what is evaluated ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassPrompts:
    """Evaluation images of a set of classes: ``prompts[i]``, ``seeds[i]``, ``labels[i]`` (class name) per image,
    grouped by class in ``classes`` order, ``per_class`` images each."""

    classes: tuple[str, ...]
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    labels: tuple[str, ...]
    per_class: int

    def subset(self, classes: Sequence[str]) -> "ClassPrompts":
        """The images of ``classes`` only (same prompts and seeds, so cached images are reused)."""
        unknown = [c for c in classes if c not in self.classes]
        if unknown:
            raise ValueError(f"classes {unknown} are not in this evaluation set {self.classes}")
        keep = [i for i, label in enumerate(self.labels) if label in set(classes)]
        return ClassPrompts(tuple(c for c in self.classes if c in set(classes)),
                            tuple(self.prompts[i] for i in keep), tuple(self.seeds[i] for i in keep),
                            tuple(self.labels[i] for i in keep), self.per_class)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"class": self.labels, "prompt": self.prompts, "seed": self.seeds})


def class_prompts(world, classes: Sequence[str], per_class: int, first_seed: int = EVAL_SEED_OFFSET) -> ClassPrompts:
    """``per_class`` (prompt, seed) pairs per class from ``world.evaluation_prompts`` (mini: the class's prompts
    cycled, seeds ``first_seed, first_seed + 1, …``; paper: the class's rows of ``imagenette_prompts.csv``)."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class <= 0:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct names, got {list(classes)}")
    prompts, seeds, labels = [], [], []
    for name in classes:
        for prompt, seed in world.evaluation_prompts(name, per_class, first_seed):
            prompts.append(prompt)
            seeds.append(int(seed))
            labels.append(name)
    return ClassPrompts(classes, tuple(prompts), tuple(seeds), tuple(labels), per_class)


def object_classes(world) -> tuple[str, ...]:
    """The world's 10 Imagenette(-analogue) classes in SM Table 1's column order."""
    return tuple(world.object_classes())


def imagenette_names(world) -> dict[str, str]:
    """World class → the Imagenette class it stands for (mini objects mirror SM Table 6's order), so our tables
    can sit beside the paper's columns."""
    from unlearnkit.data.paper_maps import IMAGENETTE_CLASSES

    return dict(zip(object_classes(world), IMAGENETTE_CLASSES))


def paper_order(world, n_classes: int) -> list[str]:
    """The order SM forgets ``n_classes`` (10, 6 or 3) classes in (SM Tables 1, 9, 2), as the world's classes."""
    from unlearnkit.data.paper_maps import SEQUENTIAL_ORDERS

    if n_classes not in SEQUENTIAL_ORDERS:
        raise ValueError(f"SM reports sequential orders for {sorted(SEQUENTIAL_ORDERS)} classes, got {n_classes!r}")
    to_world = {v: k for k, v in imagenette_names(world).items()}
    return [to_world[c] for c in SEQUENTIAL_ORDERS[n_classes]]


def object_classifier(world):
    """The world's Imagenette classifier: ``predict(images) -> class names`` and, where the world has one,
    ``predict_superclass(images) -> superclass names`` (mini: object and superclass heads; paper: ResNet-50 V1 from
    ``evaluator_weights['resnet50']``, no superclass head)."""
    return world.object_classifier()


# --- one model --------------------------------------------------------------------------------------------------------
@dataclass
class ClassEvaluation:
    """One model on one :class:`ClassPrompts`: the table row and the images (``[N, H, W, 3]``, set order)."""

    row: dict
    images: np.ndarray
    predicted: list


def _superclass_rates(classifier, images: np.ndarray, labels: Sequence[str], predicted: Sequence[str],
                      superclass_of: Mapping[str, str], erased: Sequence[str]) -> dict:
    """SUPERCLASS_RATE and FORGOTTEN_TO_SUPERCLASS on the erased classes' images (NaN without a superclass head)."""
    idx = [i for i, label in enumerate(labels) if label in set(erased)]
    if not idx or not hasattr(classifier, "predict_superclass"):
        return {SUPERCLASS_RATE: float("nan"), FORGOTTEN_TO_SUPERCLASS: float("nan")}
    predicted_superclass = classifier.predict_superclass(images[idx])
    hit = np.array([predicted_superclass[j] == superclass_of[labels[i]] for j, i in enumerate(idx)])
    not_object = np.array([predicted[i] != labels[i] for i in idx])
    return {SUPERCLASS_RATE: float(hit.mean()), FORGOTTEN_TO_SUPERCLASS: float((hit & not_object).mean())}


def evaluate_classes(world, edit: Edit | None, eval_set: ClassPrompts, erased: Sequence[str], classifier,
                     cache_dir: str | Path, settings=None) -> ClassEvaluation:
    """Per-class accuracy, ``Total Acc`` (erased), ``Others Acc`` (the rest) and the superclass rates of the model
    ``edit`` (``None`` = the original) — one row of SM Tables 1, 2, 9."""
    images = generate_edited(world, edit, eval_set.prompts, eval_set.seeds, cache_dir, settings)
    predicted = list(classifier.predict(images))
    row = classifier_accuracy(predicted, eval_set.labels, erased=[c for c in erased if c in eval_set.classes],
                              classes=eval_set.classes)
    superclass_of = {c: world.concept(c).anchor for c in eval_set.classes}
    row.update(_superclass_rates(classifier, images, eval_set.labels, predicted, superclass_of, erased))
    return ClassEvaluation(row, images, predicted)


def generic_clip(world, edit: Edit | None, captions: pd.DataFrame, scorer, cache_dir: str | Path,
                 settings=None) -> float:
    """Mean CLIP score of the model ``edit`` on generic captions (``prompt``, ``seed`` columns) — SM Table 1's
    CLIP column (COCO there; the mini world's held-out captions here)."""
    images = generate_edited(world, edit, list(captions["prompt"]), list(captions["seed"]), cache_dir, settings)
    return float(mean_clip_score(images, list(captions["prompt"]), scorer)["CLIP"])


# --- stage by stage -------------------------------------------------------------------------------------------------
def cumulative_edits(edits: Sequence[Edit]) -> list[Edit | None]:
    """``[None, e₀, e₀+e₁, …]``: the model before any stage, then after each stage (SM's sequential checkpoints)."""
    models: list[Edit | None] = [None]
    for edit in edits:
        models.append(edit if models[-1] is None else models[-1] + edit)
    return models


def stage_accuracy(world, edits: Sequence[Edit], order: Sequence[str], eval_set: ClassPrompts, classifier,
                   cache_dir: str | Path, settings=None,
                   evaluate: Callable | None = None) -> tuple[pd.DataFrame, list[ClassEvaluation]]:
    """The heat-map data: one row per stage (``0`` = original, ``i`` = after forgetting ``order[:i]``), one column
    per class of ``eval_set`` (accuracy), plus ``Total Acc`` over the classes erased *so far* (NaN at stage 0) and
    ``Others Acc`` over the rest. Also returns each stage's :class:`ClassEvaluation`.

    ``evaluate`` (default :func:`evaluate_classes`) is injectable for tests.
    """
    if len(edits) != len(order):
        raise ValueError(f"got {len(edits)} stage edits for {len(order)} classes in the order {list(order)}")
    evaluate = evaluate or evaluate_classes
    rows, evaluations = [], []
    for stage, model in enumerate(cumulative_edits(edits)):
        result = evaluate(world, model, eval_set, list(order[:stage]), classifier, cache_dir, settings)
        rows.append({"stage": stage, "erased": order[stage - 1] if stage else "—",
                     **{c: result.row[c] for c in eval_set.classes},
                     TOTAL_ACC: result.row[TOTAL_ACC], OTHERS_ACC: result.row[OTHERS_ACC]})
        evaluations.append(result)
    return pd.DataFrame(rows).set_index("stage"), evaluations


# --- single-concept baselines under the sequential protocol ---------------------------------------------------------
def fit_sequential_baseline(world, method: str, concepts: Sequence[Concept], erase: Callable | None = None,
                            progress: bool = False, **hyperparameters) -> tuple[list[Edit], list[dict]]:
    """Forget ``concepts`` one after another with a single-concept eraser (SM Tables 1, 2, 9 baselines).

    Stage ``i`` calls ``erase(method, world, concepts[i], **hyperparameters)`` on the model with the Edits of
    stages ``< i`` applied (:meth:`Edit.applied`, restored afterwards), so stage ``i``'s Edit is relative to the
    model after stage ``i-1`` and ``Edit.total(edits[:i+1])`` is the model after stage ``i`` — the same contract as
    :func:`unlearnkit.methods.sculpting.fit`. ``erase`` defaults to :func:`unlearnkit.methods.erase`. Returns the
    Edits and one info dict per stage (the eraser's own info plus ``stage`` and ``concept``).
    """
    if erase is None:
        from unlearnkit.methods import erase
    concepts = list(concepts)
    if not concepts:
        raise ValueError("concepts is empty: give at least one concept to forget")
    unet = world.pipe.unet
    edits: list[Edit] = []
    infos: list[dict] = []
    for index, concept in enumerate(concepts):
        so_far = Edit.total(edits)
        with so_far.applied(unet):
            edit, info = erase(method, world, concept, progress=progress, **hyperparameters)
        edits.append(Edit(edit.deltas, name=f"{method}{index}:{concept.name}",
                          metadata={**edit.metadata, "method": method, "stage": index, "concept": concept.name}))
        infos.append({**(info or {}), "stage": index, "concept": concept.name})
    return edits, infos


# --- attack success rates on erased classes ---------------------------------------------------------------------------
def _attack_world(world, settings=None, classifier=None):
    """``world`` as the attacks should see it: a shallow copy (pipeline, embeddings and evaluators shared) whose
    ``sampler`` is ``settings`` — the attacks generate with ``world.sampler``, the sequential tables with the
    notebook's shorter settings — and whose ``detect(concept, images)`` is ``classifier``'s top-1 == the class, the
    rule of the accuracy columns (the paper world has no ``detect`` of its own)."""
    import copy

    from unlearnkit.attacks.success import world_with_sampler

    attacked = world_with_sampler(world, settings)
    if classifier is not None:
        attacked = copy.copy(attacked) if attacked is world else attacked
        attacked.detect = lambda concept, images: np.asarray(list(classifier.predict(images))) == concept.name
    return attacked


def attack_erased_classes(world, models: Mapping[str, Edit | None], classes: Sequence[str], prompts_per_class: int,
                          attack_config=None, cache_dir: str | Path | None = None, settings=None, classifier=None,
                          first_seed: int = EVAL_SEED_OFFSET, attack: Callable | None = None) -> pd.DataFrame:
    """Attack success rates of every model on the prompts of each erased class in ``classes``.

    Per class, ``prompts_per_class`` (prompt, seed) pairs from :func:`class_prompts` — the class's first prompts
    with the first evaluation seeds, the same pairs as the accuracy tables' first images — are attacked by
    :func:`unlearnkit.attacks.attack_success_table` (the concept-vector prompts searched once per class on the
    original text encoder, the soft prompts optimised against each model). Images use ``settings`` (default the
    world's sampler). An image shows the class when ``classifier`` (:func:`object_classifier`) predicts it — the
    accuracy columns' rule, so the plain rate is those images' accuracy; without one, the world's ``detect``.

    One row per (class, model): ``class, method, n_prompts`` and the :data:`ATTACK_RATES` columns;
    ``df.attrs["seconds"]`` sums the attacks' wall time, ``df.attrs["adversarial_prompts"]`` keeps the prompts per
    class, ``df.attrs["prompts"]``/``["seeds"]`` the attacked pairs. ``attack`` (default
    ``attack_success_table``) is injectable for tests.
    """
    from unlearnkit.attacks import AttackConfig
    from unlearnkit.attacks.success import attack_success_by_concept

    classes = list(classes)
    if not classes:
        raise ValueError("classes is empty: name at least one erased class to attack")
    attack_set = class_prompts(world, classes, prompts_per_class, first_seed)
    attacked = {name: (list(one.prompts), list(one.seeds)) for name in classes for one in [attack_set.subset([name])]}
    return attack_success_by_concept(_attack_world(world, settings, classifier), models, attacked,
                                     attack_config or AttackConfig(), cache_dir, key="class", attack=attack)


def mean_attack_rates(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per model (index ``method``, first-seen order): each rate averaged over the attacked classes, weighted by
    their prompt counts — the columns :func:`attack_erased_classes` adds to Table 1."""
    rates = [c for c in ATTACK_RATES.values() if c in per_class.columns]
    weighted = per_class[rates].mul(per_class["n_prompts"], axis=0).assign(
        method=per_class["method"], n_prompts=per_class["n_prompts"])
    sums = weighted.groupby("method", sort=False).sum(min_count=1)
    return sums[rates].div(sums["n_prompts"], axis=0)


# --- figures ----------------------------------------------------------------------------------------------------------
def heatmap_figure(stages: pd.DataFrame, classes: Sequence[str], title: str | None = None,
                   labels: Mapping[str, str] | None = None):
    """Stage × class accuracy heat-map (rows: stages from the original down; columns: classes), each cell annotated;
    ``labels`` renames the columns (e.g. mini object → Imagenette class)."""
    from matplotlib.figure import Figure

    values = stages[list(classes)].to_numpy(dtype=float)
    fig = Figure(figsize=(0.75 * len(classes) + 2.2, 0.38 * len(stages) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([(labels or {}).get(c, c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(len(stages)))
    ax.set_yticklabels([f"{s}: −{e}" if s else "0: original" for s, e in zip(stages.index, stages["erased"])])
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            ax.text(c, r, f"{values[r, c]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if values[r, c] > 0.5 else "white")
    ax.set_xlabel("class (accuracy of its images)")
    ax.set_ylabel("after stage")
    fig.colorbar(image, ax=ax, fraction=0.04)
    if title:
        ax.set_title(title)
    return fig


def sweep_figure(frames: Mapping[str, pd.DataFrame], metric: str = TOTAL_ACC, title: str | None = None):
    """SM Fig. 5: one panel per swept hyperparameter (``frames[name]`` indexed by its value) showing ``metric``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.3 * len(frames), 2.8))
    for i, (name, frame) in enumerate(frames.items()):
        ax = fig.add_subplot(1, len(frames), i + 1)
        ax.plot(frame.index.to_numpy(dtype=float), frame[metric].to_numpy(dtype=float), marker="o")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"({'abcdefgh'[i]}) {name}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
