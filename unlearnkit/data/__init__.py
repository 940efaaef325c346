"""Prompt sets and concept lists: validated loaders for the papers' CSVs, and facts restated from the papers.

- :mod:`unlearnkit.data.prompts` — I2P, COCO-30k and Imagenette prompt loaders (CSVs the user supplies: UCE's
  MIT-licensed ``data/`` files), and the 100 + 100 celebrity / artist lists of ``concept_lists.json`` (our
  restatement of MACE's sets; membership may differ).
- :mod:`unlearnkit.data.paper_maps` — Imagenette superclasses and indices, NSFW maps, sequential orders, NudeNet
  label sets.
"""

from unlearnkit.data.paper_maps import (
    ANT_NSFW_ERASE_PROMPTS,
    IMAGENETTE_CLASS_INDEX,
    IMAGENETTE_CLASSES,
    IMAGENETTE_SUPERCLASS,
    NUDENET_EXPOSED_LABELS_MACE,
    NUDENET_EXPOSED_LABELS_SM,
    NUDENET_TABLE_COLUMNS,
    NUDENET_THRESHOLD,
    SEQUENTIAL_ORDERS,
    SM_CLASS_PROMPT_TEMPLATE,
    SM_NSFW_OPPOSITE,
    SM_NSFW_PROMPT_TEMPLATE,
    SM_TABLE4_LABELS,
    imagenette_superclass,
    sequential_order,
)
from unlearnkit.data.prompts import (
    COCO30K_FILE_NAME,
    I2P_FILE_NAME,
    IMAGENETTE_PROMPTS_FILE_NAME,
    PromptFileError,
    artist_names,
    celebrity_names,
    concept_catalogue,
    load_coco30k,
    load_concept_list,
    load_i2p,
    load_imagenette_prompts,
)

__all__ = [
    "ANT_NSFW_ERASE_PROMPTS",
    "COCO30K_FILE_NAME",
    "I2P_FILE_NAME",
    "IMAGENETTE_CLASSES",
    "IMAGENETTE_CLASS_INDEX",
    "IMAGENETTE_PROMPTS_FILE_NAME",
    "IMAGENETTE_SUPERCLASS",
    "NUDENET_EXPOSED_LABELS_MACE",
    "NUDENET_EXPOSED_LABELS_SM",
    "NUDENET_TABLE_COLUMNS",
    "NUDENET_THRESHOLD",
    "SEQUENTIAL_ORDERS",
    "SM_CLASS_PROMPT_TEMPLATE",
    "SM_NSFW_OPPOSITE",
    "SM_NSFW_PROMPT_TEMPLATE",
    "SM_TABLE4_LABELS",
    "PromptFileError",
    "artist_names",
    "celebrity_names",
    "concept_catalogue",
    "imagenette_superclass",
    "load_coco30k",
    "load_concept_list",
    "load_i2p",
    "load_imagenette_prompts",
    "sequential_order",
]
