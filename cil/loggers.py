"""Loggers researchers already use, per cell: TensorBoard and CSV (Avalanche's own), and
Weights & Biases (a small logger of this suite's over wandb's public API, since Avalanche 0.6's
WandBLogger breaks with current wandb). A protocol asks for them with
``loggers: [tensorboard, csv, wandb]``; each cell logs under ``<cell>/logs/<logger>/``. A
resumed or rerun cell's earlier CSV files move to ``logs/csv.previous<N>/`` (Avalanche's CSV
logger starts its files afresh); TensorBoard adds the new events beside the old ones.

With loggers, the evaluator also records per-epoch training loss and accuracy (strategies that
train by SGD) besides the per-experience test accuracies every run records; without them
nothing changes. TensorBoard and W&B are optional extras (``pip install 'varc-cil[tensorboard]'``
or ``'varc-cil[wandb]'``); W&B runs offline unless ``WANDB_MODE`` says otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from cil.errors import UserError

LOGGERS = ("tensorboard", "csv", "wandb")
_EXTRA = {"tensorboard": "tensorboard", "wandb": "wandb"}  # logger -> the package it needs


def check_loggers(names: list[str]) -> None:
    """One line naming the extra to install when a requested logger's package is absent."""
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"loggers: unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        package = _EXTRA.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise UserError(f"loggers: {name} needs the {package!r} package; install it with "
                            f"pip install 'varc-cil[{name}]'")


def make_loggers(names: list[str], log_dir: Path, *, run_name: str, config: dict | None = None) -> list:
    """Avalanche loggers writing under ``log_dir`` (one subfolder per logger)."""
    out: list = []
    for name in names:
        folder = Path(log_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "tensorboard":
            from avalanche.logging import TensorboardLogger

            out.append(TensorboardLogger(tb_log_dir=folder))
        elif name == "csv":
            from avalanche.logging import CSVLogger

            if any(folder.iterdir()):  # Avalanche's CSVLogger rewrites its files: keep a resumed cell's rows
                n = next(k for k in range(1, 10_000) if not (folder.parent / f"csv.previous{k}").exists())
                folder.rename(folder.parent / f"csv.previous{n}")
                folder.mkdir()
            out.append(CSVLogger(log_folder=str(folder)))
        elif name == "wandb":
            out.append(_wandb_logger(folder, run_name=run_name, config=config or {}))
    return out


def _wandb_logger(folder: Path, *, run_name: str, config: dict) -> Any:
    import wandb
    from avalanche.logging import BaseLogger

    class WandbLogger(BaseLogger):
        """Every scalar metric Avalanche emits, as ``wandb.log({name: value, "x": x_plot})``."""

        def __init__(self) -> None:
            super().__init__()
            self.run = wandb.init(dir=str(folder), name=run_name, config=config, reinit="finish_previous",
                                  mode=os.environ.get("WANDB_MODE", "offline"))

        def log_single_metric(self, name, value, x_plot) -> None:
            if isinstance(value, (int, float)):
                self.run.log({name: float(value), "x": x_plot})

        def close(self) -> None:
            self.run.finish()

    return WandbLogger()
