"""scikit-learn's bundled 8x8 handwritten digits (UCI ML optical digits), 1,797 images.

The images hold integer counts 0..16 (dark pixels in each 4x4 block of a 32x32 bitmap). They
are mapped to uint8 by ``pixel = (v * 255 + 8) // 16``, i.e. ``v * 255 / 16`` rounded
half up: 0 -> 0, 16 -> 255, strictly increasing, so the original value comes back exactly as
``round(pixel * 16 / 255)``. The train/test split is stratified with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cil.data.base import ImageDataset
from cil.data.split import split_pool

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def counts_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map integer counts 0..16 to uint8 0..255 exactly: (v * 255 + 8) // 16."""
    v = np.asarray(values)
    counts = np.rint(v).astype(np.int64)
    if not np.array_equal(counts, v) or counts.min() < 0 or counts.max() > 16:
        raise ValueError("digits values must be integers in 0..16")
    return ((counts * 255 + 8) // 16).astype(np.uint8)


def uint8_to_counts(pixels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`counts_to_uint8`."""
    return np.rint(np.asarray(pixels, dtype=np.float64) * 16 / 255).astype(np.int64)


def load(root: Path | None = None) -> ImageDataset:
    """The digits dataset; ``root`` is unused (the data ship with scikit-learn)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = counts_to_uint8(bunch.images)
    labels = np.asarray(bunch.target, dtype=np.int64)
    class_names = tuple(str(int(k)) for k in bunch.target_names)
    return split_pool("digits", images, labels, class_names, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
