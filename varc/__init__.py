"""varc: a small VAR (next-scale prediction) model and its generative classifier.

Standalone: knows nothing of continual learning, Avalanche or result files.

    from varc import VARModel, preset, NULL_CLASS
    model = VARModel(preset("mnist"), classes=range(10))

The names below are imported on first use, so ``import varc`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VARConfig": "varc.config",
    "preset": "varc.config",
    "preset_for_shape": "varc.config",
    "VARModel": "varc.model",
    "resolve_device": "varc.model",
    "NULL_CLASS": "varc.heads",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'varc' has no attribute {name!r}")
