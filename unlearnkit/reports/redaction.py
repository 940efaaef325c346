"""Black out unsafe content before an image is written anywhere (reports, figures, notebooks).

Sculpting Memory (Fig. 1) and ANT (Fig. 4) cover detected body parts with black boxes. The paper world's NudeNet
detector gives boxes, so :func:`redact_boxes` covers each one; the mini world's detector only says *whether* an
image is unsafe, so :func:`redact_flagged` covers the whole image. Both return copies and never touch the input.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["redact_boxes", "redact_flagged"]


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    return images


def redact_boxes(images, boxes_per_image: Sequence) -> np.ndarray:
    """Copy of ``images`` with every box blacked out.

    ``boxes_per_image[i]`` holds the boxes of image ``i`` as rows ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1``
    exclusive (NudeNet's ``[x, y, w, h]`` is ``(x, y, x + w, y + h)``). Fractional corners are widened outwards
    so the whole box is covered; boxes are clipped to the image.
    """
    images = _check_images(images)
    if len(boxes_per_image) != len(images):
        raise ValueError(f"got {len(images)} images but boxes for {len(boxes_per_image)}")
    out = images.copy()
    height, width = images.shape[1:3]
    for image, boxes in zip(out, boxes_per_image):
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        for x0, y0, x1, y1 in boxes:
            if x1 < x0 or y1 < y0:
                raise ValueError(f"box {(x0, y0, x1, y1)} is not (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
            left, top = int(np.clip(np.floor(x0), 0, width)), int(np.clip(np.floor(y0), 0, height))
            right, bottom = int(np.clip(np.ceil(x1), 0, width)), int(np.clip(np.ceil(y1), 0, height))
            image[top:bottom, left:right] = 0
    return out


def redact_flagged(images, flags) -> np.ndarray:
    """Copy of ``images`` with every flagged image (boolean ``flags[i]``) blacked out entirely."""
    images = _check_images(images)
    flags = np.asarray(flags)
    if flags.shape != (len(images),) or flags.dtype != bool:
        raise ValueError(f"flags must be a boolean array of shape ({len(images)},), got {flags.dtype} {flags.shape}")
    out = images.copy()
    out[flags] = 0
    return out
