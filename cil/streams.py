"""Class-incremental streams built with Avalanche from in-memory image arrays.

Avalanche's own SplitMNIST & co. download at run time; we build the same kind of stream
(``nc_benchmark``, an NCScenario, which iCaRL needs) from the arrays of ``cil.data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cil.data import ImageDataset, load_dataset
from cil.data.base import check_dataset
from cil.errors import UserError

if TYPE_CHECKING:
    from cil.config import Protocol


class LabelledTensors(TensorDataset):
    """A TensorDataset with the ``targets`` list Avalanche looks for."""

    def __init__(self, x_NCHW: torch.Tensor, y_N: torch.Tensor) -> None:
        super().__init__(x_NCHW, y_N)
        self.targets = y_N.tolist()


def to_tensors(x: np.ndarray, y: np.ndarray) -> LabelledTensors:
    """uint8 [N,H,W] or [N,H,W,C] images -> float [N,C,H,W] in [0, 1], int64 labels."""
    x_t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    x_t = x_t.unsqueeze(1) if x_t.ndim == 3 else x_t.permute(0, 3, 1, 2).contiguous()
    return LabelledTensors(x_t, torch.as_tensor(y, dtype=torch.long))


def resolve_class_order(n_classes: int, order: str | Sequence[int], seed: int) -> list[int]:
    """``natural`` (0..K-1), ``shuffled`` (permutation drawn from ``seed``), or an explicit list."""
    if isinstance(order, str):
        if order == "natural":
            return list(range(n_classes))
        if order == "shuffled":
            return [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]
        raise UserError(f"stream.class_order: expected 'natural', 'shuffled' or a list of class ids, got {order!r}")
    order = [int(c) for c in order]
    if sorted(order) != list(range(n_classes)):
        raise UserError(
            f"stream.class_order must list every class id 0..{n_classes - 1} exactly once, got {order}"
        )
    return order


def split_sizes(n_classes: int, *, n_experiences: int | None, classes_per_exp: int | None,
                first_exp_classes: int | None) -> list[int]:
    """Number of classes in each experience, from whichever of the three knobs was given."""
    first = first_exp_classes
    if first is not None and not 1 <= first <= n_classes:
        raise UserError(f"stream.first_exp_classes must be in 1..{n_classes}, got {first}")
    rest = n_classes - (first or 0)
    if classes_per_exp is not None:
        if classes_per_exp < 1:
            raise UserError(f"stream.classes_per_exp must be >= 1, got {classes_per_exp}")
        if rest % classes_per_exp:
            raise UserError(f"stream.classes_per_exp={classes_per_exp} does not divide the {rest} classes "
                            f"left after the first experience")
        sizes = [classes_per_exp] * (rest // classes_per_exp)
        return ([first] if first else []) + sizes
    n_exp = n_experiences if n_experiences is not None else 5
    n_rest = n_exp - (1 if first else 0)
    if n_exp < 1 or n_exp > n_classes:
        raise UserError(f"stream.n_experiences={n_exp} is impossible with {n_classes} classes; "
                        f"use 1..{n_classes}")
    if first and (n_rest < 0 or (n_rest == 0 and rest) or (n_rest and rest % n_rest)):
        raise UserError(f"stream: {rest} classes after the first experience cannot be split into "
                        f"{n_rest} equal experiences")
    if not first and n_classes % n_exp:
        raise UserError(f"stream.n_experiences={n_exp} does not divide the {n_classes} classes; choose a divisor "
                        f"or set classes_per_exp / first_exp_classes")
    if first:
        return [first] + ([rest // n_rest] * n_rest if n_rest else [])
    return [n_classes // n_exp] * n_exp


@dataclass
class Stream:
    """An Avalanche benchmark plus the class order it was built with."""

    benchmark: Any  # avalanche NCScenario
    class_order: list[int]
    classes_per_experience: list[list[int]]
    task_incremental: bool

    @property
    def n_experiences(self) -> int:
        return len(self.classes_per_experience)


def build_stream(ds: ImageDataset, *, n_experiences: int | None = 5, classes_per_exp: int | None = None,
                 first_exp_classes: int | None = None, class_order: str | Sequence[int] = "natural",
                 class_order_seed: int = 0, task_incremental: bool = False) -> Stream:
    """Split ``ds`` into experiences of new classes, in the given (or seeded shuffled) order."""
    order = resolve_class_order(ds.n_classes, class_order, class_order_seed)
    sizes = split_sizes(ds.n_classes, n_experiences=n_experiences, classes_per_exp=classes_per_exp,
                        first_exp_classes=first_exp_classes)
    present = set(np.unique(ds.y_train).tolist())
    missing = [c for c in order if c not in present]
    if missing:
        raise UserError(f"dataset {ds.name!r} has no training images of classes {missing}")
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark

    per_exp, start = [], 0
    for size in sizes:
        per_exp.append(order[start:start + size])
        start += size
    benchmark = nc_benchmark(
        to_tensors(ds.x_train, ds.y_train),
        to_tensors(ds.x_test, ds.y_test),
        n_experiences=len(sizes),
        task_labels=task_incremental,
        shuffle=False,
        fixed_class_order=order,
        per_exp_classes={i: s for i, s in enumerate(sizes)} if len(set(sizes)) > 1 else None,
        class_ids_from_zero_in_each_exp=False,
    )
    return Stream(benchmark=benchmark, class_order=order, classes_per_experience=per_exp,
                  task_incremental=task_incremental)


def protocol_stream(protocol: "Protocol") -> tuple[ImageDataset, Stream]:
    """The dataset and stream a protocol's runs use (scripts that re-examine a run build the same)."""
    dataset = check_dataset(load_dataset(protocol.dataset, root=protocol.data_root))
    s = protocol.stream
    return dataset, build_stream(dataset, n_experiences=s.n_experiences, classes_per_exp=s.classes_per_exp,
                                 first_exp_classes=s.first_exp_classes, class_order=s.class_order,
                                 class_order_seed=s.class_order_seed, task_incremental=s.task_incremental)


def robustness_subset(ds: ImageDataset, n_images: int, seed: int) -> np.ndarray:
    """Indices of a fixed, class-balanced subset of the test set (``n_images`` split evenly over
    the classes, fewer where a class has fewer): the same for every strategy and training seed."""
    rng = np.random.default_rng(seed)
    per_class = max(1, n_images // ds.n_classes)
    picks = [rng.permutation(np.flatnonzero(ds.y_test == c))[:per_class] for c in range(ds.n_classes)]
    return np.sort(np.concatenate(picks))


def corrupted_streams(protocol: "Protocol", ds: ImageDataset) -> list[tuple[str, int, Stream]]:
    """(corruption, severity, stream) for the protocol's robustness evaluation: the stream's test
    experiences hold corrupted copies of :func:`robustness_subset`, split into experiences as the
    protocol's stream is (its class order), so accuracies can be read per experience. The first
    entry, ("none", 0), is the subset itself: the clean yardstick of the same images."""
    from cil.robustness import corrupt, expand_corruptions

    r = protocol.robustness
    keep = robustness_subset(ds, r.images, r.seed)
    x, y = ds.x_test[keep], ds.y_test[keep]
    clean = to_tensors(x, y).tensors[0]  # float [N, C, H, W] in [0, 1]
    s = protocol.stream
    out = []
    pairs = [("none", 0)] + [(n, k) for n in expand_corruptions(r.corruptions) for k in r.severities]
    for name, severity in pairs:
        bad = clean.numpy() if severity == 0 else corrupt(clean.numpy(), name, severity, seed=r.seed)
        pixels = np.rint(bad * 255.0).astype(np.uint8)  # 8-bit pixels, as MNIST-C stores its images
        pixels = pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)
        shifted = ImageDataset(name=f"{ds.name}:{name}:{severity}", x_train=x, y_train=y, x_test=pixels,
                               y_test=y, class_names=ds.class_names)
        out.append((name, severity, build_stream(
            shifted, n_experiences=s.n_experiences, classes_per_exp=s.classes_per_exp,
            first_exp_classes=s.first_exp_classes, class_order=s.class_order,
            class_order_seed=s.class_order_seed, task_incremental=s.task_incremental)))
    return out
