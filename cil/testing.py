"""Helpers for testing a strategy the way the runner drives it: a tiny real stream, the context a
builder gets, and train-then-evaluate into an accuracy matrix.

    from cil import testing

    R = testing.train_and_evaluate("ncm")                       # a registered name
    R = testing.train_and_evaluate("my_method", {"k": 3}, task_incremental=True)
    assert R[-1][0] > 0.5                                       # R[i][j]: exp j after training i

The stream is scikit-learn's 8x8 digits (bundled, no download), classes 0..5 in three
experiences of two classes; images reach a strategy as float32 [B, 1, 8, 8] in [0, 1] with
int64 labels, exactly as in a protocol run. The suite's own strategy tests use these helpers.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cil.data import ImageDataset
    from cil.strategies.registry import StrategyContext
    from cil.streams import Stream

TINY_CLASSES = 6


@functools.lru_cache(maxsize=None)
def tiny_dataset(n_classes: int = TINY_CLASSES) -> "ImageDataset":
    """The first ``n_classes`` digits of scikit-learn's 8x8 digits, train and test splits."""
    from cil.data import ImageDataset, load_dataset

    ds = load_dataset("digits")
    train, test = ds.y_train < n_classes, ds.y_test < n_classes
    return ImageDataset(name=f"digits{n_classes}", x_train=ds.x_train[train], y_train=ds.y_train[train],
                        x_test=ds.x_test[test], y_test=ds.y_test[test], class_names=ds.class_names[:n_classes])


def tiny_stream(*, n_experiences: int = 3, task_incremental: bool = False,
                dataset: "ImageDataset | None" = None) -> "Stream":
    """A class-incremental stream of :func:`tiny_dataset` (natural class order)."""
    from cil.streams import build_stream

    return build_stream(dataset or tiny_dataset(), n_experiences=n_experiences, task_incremental=task_incremental)


def context(dataset: "ImageDataset | None" = None, *, seed: int = 0, task_incremental: bool = False,
            name: str = "", **training: Any) -> "StrategyContext":
    """The context the runner would give a builder; ``training`` overrides TrainingConfig fields
    (defaults here: a 64-unit MLP, 3 epochs, minibatch 16)."""
    import dataclasses

    from cil.config import TrainingConfig
    from cil.runner import make_context

    settings = {"backbone_args": {"hidden": [64]}, "epochs": 3, "train_mb_size": 16, **training}
    config = dataclasses.replace(TrainingConfig(), **settings)
    return make_context(dataset or tiny_dataset(), config, seed=seed, task_incremental=task_incremental, name=name)


def train_and_evaluate(strategy: str, params: dict | None = None, *, seed: int = 0, task_incremental: bool = False,
                       n_experiences: int = 3, **training: Any) -> list[list[float]]:
    """Build the registered ``strategy`` with ``params`` and run it over :func:`tiny_stream` as a
    protocol cell runs: seeded, trained experience by experience, evaluated on the whole test
    stream after each. Returns the accuracy matrix R[i][j]."""
    from cil.runner import experience_accuracies, seed_everything
    from cil.strategies import registry

    stream = tiny_stream(n_experiences=n_experiences, task_incremental=task_incremental)
    seed_everything(seed)
    built = registry.build(strategy, context(seed=seed, task_incremental=task_incremental, name=strategy,
                                              **training), params or {})
    rows = []
    for exp in stream.benchmark.train_stream:
        built.train(exp)
        rows.append(experience_accuracies(built.eval(stream.benchmark.test_stream), stream.n_experiences,
                                          name=f"strategy {strategy!r}"))
    return rows
