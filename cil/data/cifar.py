"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from their "python version" folders on disk.

Layout as torchvision leaves it after a download: ``<root>/cifar-10-batches-py/``
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``) and
``<root>/cifar-100-python/`` (``train``, ``test``, ``meta``; the 100 fine labels are used).
The batches are pickles; they are read with :mod:`cil.data.numpy_pickle`, which refuses
anything but numpy arrays. Images come out uint8 [N, 32, 32, 3].
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cil.data.base import ImageDataset
from cil.data.numpy_pickle import load_numpy_pickle
from cil.errors import UserError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str

    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files + (self.meta_file,)


CIFAR10 = CifarSpec(name="cifar10", folder="cifar-10-batches-py",
                    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
                    meta_file="batches.meta", label_key="labels", names_key="label_names")
CIFAR100 = CifarSpec(name="cifar100", folder="cifar-100-python", train_files=("train",), test_files=("test",),
                     meta_file="meta", label_key="fine_labels", names_key="fine_label_names")
SPECS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}


def _read_dict(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = load_numpy_pickle(f)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                        "expected a CIFAR python-version batch") from e
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, expected a CIFAR batch dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise UserError(f"{path} has no {key!r} entry; expected keys include {key!r}")
    return batch[key]


def _read_split(spec: CifarSpec, folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = _read_dict(path)
        data = np.asarray(_field(batch, "data", path))
        y = np.asarray(_field(batch, spec.label_key, path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UserError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
        if y.ndim != 1 or len(y) != len(data) or (len(y) and not np.issubdtype(y.dtype, np.integer)):
            raise UserError(f"{path}: {spec.label_key!r} must be {len(data)} integers, got {y.dtype} {y.shape}")
        # rows are channel-major (1024 red, 1024 green, 1024 blue), each row-major 32x32
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y.astype(np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def load_cifar(spec: CifarSpec, root: Path) -> ImageDataset:
    """Read ``spec``'s folder under ``root``; a missing folder or file is a UserError with a hint."""
    folder = Path(root) / spec.folder
    hint = (f"run 'cil data fetch {spec.name}' on a machine with internet (torchvision download) "
            f"or copy the {spec.folder} folder there (or pass --data-root, or set CIL_DATA)")
    if not folder.is_dir():
        raise UserError(f"dataset {spec.name!r} not found under {folder}; {hint}")
    missing = [f for f in spec.files() if not (folder / f).is_file()]
    if missing:
        raise UserError(f"dataset {spec.name!r} is incomplete under {folder}: missing {', '.join(missing)}; {hint}")
    meta_path = folder / spec.meta_file
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _field(_read_dict(meta_path), spec.names_key,
                                                                            meta_path)]
    x_train, y_train = _read_split(spec, folder, spec.train_files)
    x_test, y_test = _read_split(spec, folder, spec.test_files)
    for y in (y_train, y_test):
        if len(y) and (y.min() < 0 or y.max() >= len(names)):
            raise UserError(f"{folder}: labels must be 0..{len(names) - 1} to match {meta_path.name}, "
                            f"found {int(y.min())}..{int(y.max())}")
    return ImageDataset(name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        class_names=tuple(names))


def load_cifar10(root: Path) -> ImageDataset:
    """CIFAR-10 from ``<root>/cifar-10-batches-py``."""
    return load_cifar(CIFAR10, root)


def load_cifar100(root: Path) -> ImageDataset:
    """CIFAR-100 (fine labels) from ``<root>/cifar-100-python``."""
    return load_cifar(CIFAR100, root)
