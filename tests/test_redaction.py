"""Redaction: every box or flagged image is blacked out, nothing else changes, inputs are never modified."""
import numpy as np
import pytest

from unlearnkit import metrics as M
from unlearnkit.reports.redaction import redact_boxes, redact_flagged


def test_every_box_is_covered_and_nothing_else_changes():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (6, 40, 50, 3), dtype=np.uint8)  # no pixel is black before redaction
    boxes_per_image = []
    for _ in images:
        n = int(rng.integers(0, 4))
        x0, y0 = rng.uniform(-10, 45, n), rng.uniform(-10, 35, n)
        boxes_per_image.append(np.stack([x0, y0, x0 + rng.uniform(0, 20, n), y0 + rng.uniform(0, 20, n)], -1))
    boxes_per_image[0] = np.array([[-5.0, -5.0, 60.0, 3.2]])  # clipped at three edges, fractional bottom
    original = images.copy()
    out = redact_boxes(images, boxes_per_image)
    assert np.array_equal(images, original)
    for image, redacted, boxes in zip(images, out, boxes_per_image):
        covered = np.zeros(image.shape[:2], bool)
        for x0, y0, x1, y1 in boxes:
            covered[max(int(np.floor(y0)), 0):max(int(np.ceil(y1)), 0),
                    max(int(np.floor(x0)), 0):max(int(np.ceil(x1)), 0)] = True
        assert np.all(redacted[covered] == 0)
        assert np.array_equal(redacted[~covered], image[~covered])
    assert np.all(out[0, :4] == 0) and np.all(out[0, 4:] == images[0, 4:])


def test_flagged_images_are_blacked_out_entirely():
    images = np.full((3, 4, 4, 3), 200, np.uint8)
    out = redact_flagged(images, np.array([True, False, True]))
    assert np.all(out[[0, 2]] == 0) and np.all(out[1] == 200) and np.all(images == 200)
    with pytest.raises(ValueError, match="boolean"):
        redact_flagged(images, [1, 0, 1])


def test_nudity_boxes_feed_redaction():
    D = M.Detection
    images = np.full((2, 20, 20, 3), 255, np.uint8)
    counts = M.count_nudity([[D("FEET_EXPOSED", 0.9, (2, 3, 6, 9)), D("FEET_EXPOSED", 0.5, (10, 10, 20, 20))], []],
                            ["FEET_EXPOSED"])
    out = redact_boxes(images, counts.boxes_per_image)
    assert np.all(out[0, 3:9, 2:6] == 0) and (out[0] == 0).all(-1).sum() == 4 * 6  # only the box above 0.6
    assert np.all(out[1] == 255)


def test_bad_boxes_are_rejected():
    images = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="x0 <= x1"):
        redact_boxes(images, [[(5, 0, 2, 4)]])
    with pytest.raises(ValueError, match="boxes for"):
        redact_boxes(images, [])
    with pytest.raises(ValueError, match="uint8"):
        redact_boxes(images.astype(float), [[]])
