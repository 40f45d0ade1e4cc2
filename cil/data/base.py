"""The dataset record and the name -> loader registry."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cil.errors import UserError


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image dataset held in memory.

    Images are uint8, shaped [N, H, W] (grayscale) or [N, H, W, C] (colour); labels are
    int64 in 0..n_classes-1; ``class_names[k]`` names label k.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) as the models see it."""
        shape = self.x_train.shape[1:]
        if len(shape) == 2:
            return (1, int(shape[0]), int(shape[1]))
        return (int(shape[2]), int(shape[0]), int(shape[1]))


Loader = Callable[[Path], ImageDataset]

# name -> "module:function"; modules are imported only when their dataset is asked for.
_LOADERS: dict[str, str] = {
    "digits": "cil.data.digits:load",
    "mnist5k": "cil.data.mnist5k:load",
    "mnist": "cil.data.mnist:load_mnist",
    "fashion_mnist": "cil.data.mnist:load_fashion_mnist",
    "mnist_fashion": "cil.data.mnist:load_mnist_fashion",  # both, as one 20-class dataset
    "cifar10": "cil.data.cifar:load_cifar10",
    "cifar100": "cil.data.cifar:load_cifar100",
}


def register_dataset(name: str, target: str) -> None:
    """Add a dataset: ``target`` is "module:function", the function takes the data root."""
    _LOADERS[name] = target


def available_datasets() -> list[str]:
    """Registered names, plus the ``npz:<path>`` form for the user's own data."""
    return sorted(_LOADERS) + ["npz:<path>"]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where downloaded/fetched data live: argument, else $CIL_DATA, else ~/.cache/varc-cil/data."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("CIL_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "varc-cil" / "data"


def load_dataset(name: str, *, root: str | os.PathLike | None = None) -> ImageDataset:
    """Load a dataset by registered name or ``npz:<path>``; raises UserError if unknown/absent."""
    if name.startswith("npz:"):
        from cil.data.npz import load_npz

        return load_npz(Path(name[4:]).expanduser())
    if name not in _LOADERS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(available_datasets())}")
    module, func = _LOADERS[name].split(":")
    loader: Loader = getattr(importlib.import_module(module), func)
    return loader(data_root(root))


def check_dataset(ds: ImageDataset) -> ImageDataset:
    """What class-incremental learning needs of any dataset: two classes or more, and every
    class with training and test images (a class without test images has no accuracy)."""
    if ds.n_classes < 2:
        raise UserError(f"dataset {ds.name} has {ds.n_classes} class; class-incremental learning needs at least 2")
    for split, y in (("training", ds.y_train), ("test", ds.y_test)):
        counts = np.bincount(y, minlength=ds.n_classes)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            names = ", ".join(f"{int(c)} ({ds.class_names[c]})" for c in empty[:5])
            raise UserError(f"dataset {ds.name}: class {names} has no {split} images; every class needs "
                            f"training and test images")
    return ds
