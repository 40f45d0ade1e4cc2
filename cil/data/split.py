"""Fixed stratified train/test splits for datasets that ship as one pool of images.

The split uses numpy's legacy ``RandomState``, whose stream numpy keeps frozen across
releases (NEP 19), so a given (labels, fraction, seed) gives the same split forever.
"""

from __future__ import annotations

import numpy as np

from cil.data.base import ImageDataset


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted: every class gives round(n_k * test_fraction) to test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    test_parts = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        n_test = int(round(len(members) * test_fraction))
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts))
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return np.flatnonzero(~is_test), test_idx


def split_pool(
    name: str, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], *, test_fraction: float, seed: int
) -> ImageDataset:
    """One pool of labelled images as an :class:`ImageDataset`, split by :func:`stratified_split`."""
    train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction, seed=seed)
    return ImageDataset(
        name=name,
        x_train=images[train_idx],
        y_train=labels[train_idx],
        x_test=images[test_idx],
        y_test=labels[test_idx],
        class_names=class_names,
    )
