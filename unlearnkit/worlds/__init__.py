"""Worlds: where models, concepts, prompt sets and evaluators come from (mini = embedded default, paper = SD v1.4).

Every world implements :class:`unlearnkit.worlds.protocol.World`; nothing outside this package asks which world it
is in.
"""
from __future__ import annotations

from unlearnkit.worlds.protocol import World

WORLDS = ("mini", "paper")
__all__ = ["WORLDS", "World", "load_world", "check_world_files", "catalogue"]


def catalogue(name: str, kind: str | None = None) -> list:
    """Every concept a world knows (of ``kind``), as Concepts, without loading any model."""
    if name == "mini":
        from unlearnkit.worlds.mini import catalogue as mini_catalogue
        from unlearnkit.worlds.mini import mini_concepts

        return [mini_catalogue.concept(n) for n in mini_concepts(kind)]
    if name == "paper":
        from unlearnkit.worlds.paper import paper_concept, paper_concepts

        return [paper_concept(n) for n in paper_concepts(kind)]
    from unlearnkit.core.validation import check_choice

    check_choice(name, "world", WORLDS)


def check_world_files(name: str, needs=(), model_path=None, data_dir=None, evaluator_weights=None,
                      coco_images_dir=None) -> None:
    """Before any model loads: raise one error listing every file the ``needs`` of a run lack (paper world; the
    mini world ships everything). ``needs``: input keys, or a notebook's name (``"02_single_concept_nsfw"``)."""
    from unlearnkit.core.validation import check_choice

    check_choice(name, "world", WORLDS)
    if name == "paper":
        from unlearnkit.worlds.paper_files import NOTEBOOK_NEEDS, check_paper_files

        if isinstance(needs, str):   # a notebook's name: what that notebook reads
            needs = NOTEBOOK_NEEDS[needs]
        check_paper_files(needs, model_path=model_path, data_dir=data_dir, evaluator_weights=evaluator_weights,
                          coco_images_dir=coco_images_dir)


def load_world(name: str = "mini", device="cpu", model_path=None, weights_dir=None, data_dir=None,
               evaluator_weights=None, coco_images_dir=None, needs=()) -> World:
    """Load a world by name. ``mini`` reads the weights shipped in the package (or ``weights_dir``); ``paper``
    loads SD v1.4 from ``model_path`` (a local diffusers folder) with the evaluators' local files and the prompt
    CSVs in ``data_dir`` — after checking the device and every file ``needs`` names
    (:data:`paper_files.NOTEBOOK_NEEDS`)."""
    from unlearnkit.core.validation import check_device

    check_world_files(name, needs, model_path, data_dir, evaluator_weights, coco_images_dir)
    check_device(device)
    if name == "mini":
        from unlearnkit.worlds.mini import WEIGHTS_DIR, load_mini_world

        return load_mini_world(device, weights_dir or WEIGHTS_DIR)
    from unlearnkit.worlds.paper import PaperWorld

    if model_path is None:
        raise ValueError("the paper world needs model_path: a local Stable Diffusion v1.4 diffusers folder")
    return PaperWorld.load(model_path, device=device, data_dir=data_dir,
                           evaluator_weights=dict(evaluator_weights or {}), coco_images_dir=coco_images_dir)
