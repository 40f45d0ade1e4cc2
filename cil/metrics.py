"""Continual-learning metrics as pure functions of the accuracy matrix.

``R[i][j]`` is the test accuracy on experience ``j`` after training experience ``i``
(both 0-based, T x T). Definitions follow Lopez-Paz & Ranzato 2017 (GEM: BWT) and
Chaudhry et al. 2018 (RWalk: forgetting as the drop from the best earlier accuracy),
which is also what Avalanche's ``forgetting_metrics``/``bwt_metrics`` report at stream level.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray


def _square(R: Matrix) -> np.ndarray:
    arr = np.asarray(R, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be a non-empty square T x T array, got shape {arr.shape}")
    return arr


def final_accuracy(R: Matrix) -> float:
    """Mean accuracy over all experiences after the last one (all classes when sizes are equal)."""
    arr = _square(R)
    return float(arr[-1].mean())


def per_experience_final(R: Matrix) -> list[float]:
    """Accuracy on each experience after training the last one (the last row of R)."""
    return [float(v) for v in _square(R)[-1]]


def seen_accuracy(R: Matrix) -> list[float]:
    """Mean accuracy on the experiences seen so far, after each training experience."""
    arr = _square(R)
    return [float(arr[i, : i + 1].mean()) for i in range(arr.shape[0])]


def average_incremental_accuracy(R: Matrix) -> float:
    """Mean over the stream of the seen-so-far accuracy (Rebuffi et al. 2017, iCaRL)."""
    return float(np.mean(seen_accuracy(R)))


def forgetting_per_experience(R: Matrix) -> list[float]:
    """For each experience j < T-1: best accuracy before the last step minus the final one."""
    arr = _square(R)
    T = arr.shape[0]
    return [float(arr[j : T - 1, j].max() - arr[T - 1, j]) for j in range(T - 1)]


def average_forgetting(R: Matrix) -> float:
    """Mean max-based forgetting over all but the last experience (0 for a single experience)."""
    values = forgetting_per_experience(R)
    return float(np.mean(values)) if values else 0.0


def bwt(R: Matrix) -> float:
    """Backward transfer: mean of R[T-1][j] - R[j][j] over j < T-1 (negative = forgetting)."""
    arr = _square(R)
    T = arr.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([arr[T - 1, j] - arr[j, j] for j in range(T - 1)]))


def summarize(R: Matrix) -> dict[str, float | list[float]]:
    """All stream-level metrics of one run, as a JSON-ready dict."""
    return {
        "final_accuracy": final_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "average_forgetting": average_forgetting(R),
        "bwt": bwt(R),
        "per_experience_final": per_experience_final(R),
        "seen_accuracy": seen_accuracy(R),
    }
