"""Worlds: where models, concepts, prompt sets and evaluators come from (mini = embedded default, paper = SD v1.4)."""
from __future__ import annotations

WORLDS = ("mini", "paper")


def load_world(name: str = "mini", device="cpu", model_path=None, weights_dir=None, data_dir=None,
               evaluator_weights=None, coco_images_dir=None):
    """Load a world by name. ``mini`` reads the weights shipped in the package (or ``weights_dir``);
    ``paper`` loads SD v1.4 from ``model_path`` (a local diffusers folder) with the evaluators' local weight files
    and the prompt CSVs in ``data_dir`` (see :class:`unlearnkit.worlds.paper.PaperWorld`)."""
    if name == "mini":
        from .mini import WEIGHTS_DIR, load_mini_world

        return load_mini_world(device, weights_dir or WEIGHTS_DIR)
    if name == "paper":
        from .paper import PaperWorld

        if model_path is None:
            raise ValueError("the paper world needs model_path: a local Stable Diffusion v1.4 diffusers folder")
        return PaperWorld.load(model_path, device=device, data_dir=data_dir,
                               evaluator_weights=dict(evaluator_weights or {}), coco_images_dir=coco_images_dir)
    raise ValueError(f"unknown world {name!r}; expected one of {WORLDS}")
