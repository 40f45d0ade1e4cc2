"""The user's own dataset from one ``.npz`` file (``load_dataset("npz:/path/data.npz")``).

Arrays (see docs/datasets.md for a complete example):

- ``x_train``, ``x_test``: images [N, H, W] or [N, H, W, C] with C in {1, 3}; uint8 0..255,
  any integer type holding 0..255, or floats in [0, 1] (scaled by 255 and rounded to uint8).
  [N, H, W, 1] is stored as [N, H, W].
- ``y_train``, ``y_test``: integer labels [N] in 0..K-1, every class present in train or test.
- ``class_names`` (optional): K strings, name of label k at index k; default "0".."K-1".

Every problem is a one-line UserError naming the array and what would be right. The file is
opened with ``allow_pickle=False``, so it can never run code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cil.data.base import ImageDataset
from cil.errors import UserError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("class_names",)


def _images(name: str, x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise UserError(f"{where}: {name} has shape {x.shape}; images must be [N, H, W] or [N, H, W, C] with C 1 or 3")
    if len(x) == 0:
        raise UserError(f"{where}: {name} holds no images; it needs at least one")
    if x.ndim == 4 and x.shape[3] == 1:
        x = x[..., 0]
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        raise UserError(f"{where}: {name} is boolean; images must be uint8 0..255 or floats in [0, 1]")
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise UserError(f"{where}: {name} ({x.dtype}) has values {x.min()}..{x.max()}; "
                            "integer images must be 0..255")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            bad = "NaN" if np.isnan(x).any() else "infinite"
            raise UserError(f"{where}: {name} ({x.dtype}) holds {bad} values; every pixel must be a number in "
                            "[0, 1] (or give uint8 0..255)")
        if x.min() < 0 or x.max() > 1:
            raise UserError(f"{where}: {name} ({x.dtype}) has values outside [0, 1]; float images must be in [0, 1] "
                            "(or give uint8 0..255)")
        return np.rint(x * 255.0).astype(np.uint8)
    raise UserError(f"{where}: {name} has dtype {x.dtype}; images must be uint8 0..255 or floats in [0, 1]")


def _labels(name: str, y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{where}: {name} has dtype {y.dtype}; labels must be integers (e.g. y.astype(np.int64))")
    if y.ndim != 1:
        raise UserError(f"{where}: {name} has shape {y.shape}; labels must be one-dimensional [N]")
    if len(y) != n:
        raise UserError(f"{where}: {name} has {len(y)} labels but the images number {n}; they must match")
    return y.astype(np.int64)


def load_npz(path: Path) -> ImageDataset:
    """Load and validate a user dataset from ``path`` (see the module docstring for the format)."""
    path = Path(path).expanduser()
    where = str(path)
    need = ", ".join(REQUIRED)
    if not path.is_file():
        raise UserError(f"npz file {where} not found; give npz:<path to a .npz holding {need}>")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {where} as .npz ({type(e).__name__}); save it with "
                        f"np.savez(path, {need}=...)") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{where} holds a single array, not an .npz archive; save it with np.savez(path, {need}=...)")
    with archive:
        missing = [k for k in REQUIRED if k not in archive.files]
        if missing:
            raise UserError(f"{where} lacks {', '.join(missing)} (it has: {', '.join(archive.files) or 'nothing'}); "
                            f"an npz dataset needs {need} (class_names optional)")
        arrays = {}
        for key in REQUIRED + OPTIONAL:
            if key in archive.files:
                try:
                    arrays[key] = archive[key]
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                    hint = " (store strings as np.array(names, dtype=str))" if key == "class_names" else ""
                    raise UserError(f"{where}: cannot read {key}: {str(e).splitlines()[0]}{hint}") from e

    x_train = _images("x_train", arrays["x_train"], where)
    x_test = _images("x_test", arrays["x_test"], where)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{where}: x_train images are {x_train.shape[1:]} but x_test images {x_test.shape[1:]}; "
                        "they must match")
    y_train = _labels("y_train", arrays["y_train"], len(x_train), where)
    y_test = _labels("y_test", arrays["y_test"], len(x_test), where)

    all_labels = np.concatenate([y_train, y_test])
    if all_labels.min() < 0:
        raise UserError(f"{where}: labels must be 0..K-1, found {int(all_labels.min())}")
    present = np.unique(all_labels)
    if "class_names" in arrays:
        names_arr = arrays["class_names"]
        if names_arr.ndim != 1 or names_arr.dtype.kind not in "US":
            raise UserError(f"{where}: class_names must be a 1-D string array (np.array(names, dtype=str)), "
                            f"got {names_arr.dtype} {names_arr.shape}")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names_arr.tolist())
        if len(set(names)) != len(names):
            raise UserError(f"{where}: class_names has duplicates; each class needs its own name")
        if present[-1] >= len(names) or len(present) != len(names):
            raise UserError(f"{where}: {len(names)} class_names but the labels are {_describe(present)}; "
                            f"labels must be exactly 0..{len(names) - 1}, one per name")
    else:
        k = int(present[-1]) + 1
        if len(present) != k:
            gaps = sorted(set(range(k)) - set(present.tolist()))
            raise UserError(f"{where}: labels must be 0..K-1 with every class present; missing "
                            f"{', '.join(map(str, gaps[:10]))}{' ...' if len(gaps) > 10 else ''} "
                            "(relabel with np.unique(y, return_inverse=True))")
        names = tuple(str(i) for i in range(k))
    return ImageDataset(name=f"npz:{path}", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        class_names=names)


def _describe(labels: np.ndarray) -> str:
    """'0..9' when contiguous from 0, else a short list."""
    values = labels.tolist()
    if values == list(range(len(values))):
        return f"0..{len(values) - 1}"
    shown = ", ".join(map(str, values[:10]))
    return f"{{{shown}{', ...' if len(values) > 10 else ''}}}"
