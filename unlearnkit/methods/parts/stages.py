"""Sequential multi-concept forgetting: one training stage per concept, one Edit per stage.

The runner is method-agnostic (Sculpting Memory's stages)::

    for concept in order:
        new optimiser; teacher = the model so far (= this stage's delta switched off);
        train (the method's stage trainer, one summary per epoch);
        select the stage's checkpoint — "last" epoch or "best_train_loss" (lowest epoch-mean training loss,
        the Sculpting Memory release) — and continue from it.

Stage ``i``'s Edit is the change made during stage ``i``; the sum of the first ``i`` Edits is the model after stage
``i`` (to float rounding). No UNet is ever copied: each stage trains a :class:`~unlearnkit.core.edits.TrainableDelta`
over the chosen parameters, which keeps the stage's starting values — the teacher is ``delta.frozen()``. The
runner keeps the trained tensors' original values once more, to put the model back bit-exactly at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit, TrainableDelta

__all__ = ["CHECKPOINT_POLICIES", "Stage", "EpochResult", "StageTrainer", "run_sequential"]

CHECKPOINT_POLICIES = ("last", "best_train_loss")


@dataclass
class Stage:
    """What a stage trainer receives.

    Attributes:
        index: 0-based position of the concept in the forgetting order.
        concept: the concept this stage forgets.
        delta: the trainable parameters (``delta.params``); ``with delta.frozen():`` runs the teacher — the model
            after the previous stages (the original model for stage 0).
        optimizer: a fresh optimiser over ``delta.params`` (made by the runner for every stage).
    """

    index: int
    concept: Concept
    delta: TrainableDelta
    optimizer: torch.optim.Optimizer


@dataclass
class EpochResult:
    """One epoch's summary: the loss used for checkpoint selection and the per-step log rows."""

    train_loss: float
    steps: list[dict] = field(default_factory=list)


StageTrainer = Callable[[Stage], Iterable[EpochResult]]


def _snapshot(delta: TrainableDelta) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in delta.params.items()}


@torch.no_grad()
def _restore(delta: TrainableDelta, values: dict[str, torch.Tensor]) -> None:
    for n, p in delta.params.items():
        p.copy_(values[n])


def run_sequential(unet: torch.nn.Module, concepts: Sequence[Concept], parameter_names: Sequence[str],
                   train_stage: StageTrainer,
                   make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
                   checkpoint: str = "last", edit_prefix: str = "stage", metadata: dict | None = None,
                   restore: bool = True) -> tuple[list[Edit], list[dict]]:
    """Forget ``concepts`` one after another; return one Edit per stage and the per-step log.

    Args:
        parameter_names: the UNet parameters every stage may train (a scope from :mod:`unlearnkit.core.params`).
        train_stage: the method's stage trainer; yields an :class:`EpochResult` after each epoch.
        make_optimizer: builds a fresh optimiser for a stage from its parameters.
        checkpoint: ``"last"`` or ``"best_train_loss"`` (lowest ``EpochResult.train_loss``; ties keep the earlier).
        restore: put the model back to its state before the call (bit-exact). ``False`` leaves the final model in
            place — for checks that compare it with the sum of the Edits.
    Returns:
        ``(edits, log)``: ``edits[i]`` with metadata ``{"stage", "concept", "selected_epoch", "epoch_losses"}``;
        ``log`` rows carry ``stage``, ``concept``, ``epoch`` and the trainer's own fields.
    """
    if checkpoint not in CHECKPOINT_POLICIES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_POLICIES}, got {checkpoint!r}")
    concepts = list(concepts)
    if not concepts:
        raise ValueError("concepts is empty: give at least one concept to forget")
    names = list(parameter_names)
    requires_grad = {n: p.requires_grad for n, p in unet.named_parameters()}
    original = TrainableDelta(unet, names)
    edits: list[Edit] = []
    log: list[dict] = []
    try:
        unet.requires_grad_(False)
        for p in original.params.values():
            p.requires_grad_(True)
        for index, concept in enumerate(concepts):
            delta = TrainableDelta(unet, names)
            optimizer = make_optimizer(list(delta.params.values()))
            best_loss, best_epoch, best_values = math.inf, None, None
            epoch_losses: list[float] = []
            for epoch, result in enumerate(train_stage(Stage(index, concept, delta, optimizer))):
                epoch_losses.append(float(result.train_loss))
                log += [{"stage": index, "concept": concept.name, "epoch": epoch, **row} for row in result.steps]
                if checkpoint == "best_train_loss" and result.train_loss < best_loss:
                    best_loss, best_epoch, best_values = float(result.train_loss), epoch, _snapshot(delta)
            if not epoch_losses:
                raise RuntimeError(f"the stage trainer ran no epoch for concept {concept.name!r}")
            if best_values is not None:
                _restore(delta, best_values)
                del best_values
            selected = best_epoch if best_epoch is not None else len(epoch_losses) - 1
            for p in delta.params.values():
                p.grad = None
            edits.append(delta.to_edit(name=f"{edit_prefix}{index}:{concept.name}", metadata={
                **(metadata or {}), "stage": index, "concept": concept.name, "selected_epoch": selected,
                "checkpoint": checkpoint, "epoch_losses": epoch_losses}))
            del delta, optimizer
    finally:
        if restore:
            original.reset()
        for n, p in unet.named_parameters():
            p.requires_grad_(requires_grad[n])
            p.grad = None
    return edits, log
