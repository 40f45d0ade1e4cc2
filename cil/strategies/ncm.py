"""Nearest class mean on the flattened pixels: the floor any class-incremental method must clear.

A non-SGD strategy (``cil.strategies.base.ScoreClassifier``): ``update`` adds an experience's
images to exact running class sums, ``scores`` is minus the distance to each class mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cil.strategies.base import ScoreClassifier
from cil.strategies.registry import StrategyContext, register

if TYPE_CHECKING:
    import torch


class StreamingNCM(ScoreClassifier):
    """Exact running class means of flattened images; a class's score is minus the squared
    Euclidean distance to its mean (nearest class mean, e.g. Mensink et al. 2013).

    Keeps per-class sums and counts in float64, so the means after any sequence of updates
    equal the means of all images seen, whatever the order; no image is stored.
    """

    checkpoints = True

    def __init__(self, n_classes: int, device: Any = "cpu") -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes
        self.device = device
        self.sums = None  # [n_classes, D] float64, created with the first update (D from the images)
        self.counts = None  # [n_classes] int64

    @property
    def classes(self) -> list[int]:
        """Classes seen so far, ascending."""
        if self.counts is None:
            return []
        return [int(c) for c in (self.counts > 0).nonzero().flatten()]

    def update(self, x_BD: torch.Tensor, y_B: torch.Tensor) -> None:
        """Add images (any shape [B, ...], flattened here) with integer labels to the class sums."""
        import torch

        x = x_BD.reshape(len(x_BD), -1).to(self.device, torch.float64)
        y = y_B.to(self.device, torch.long)
        if self.sums is None:
            self.sums = torch.zeros(self.n_classes, x.shape[1], dtype=torch.float64, device=self.device)
            self.counts = torch.zeros(self.n_classes, dtype=torch.long, device=self.device)
        self.sums.index_add_(0, y, x)
        self.counts += torch.bincount(y, minlength=self.n_classes)

    def means(self) -> torch.Tensor:
        """[len(classes), D] float64 means of the classes seen, in ``classes`` order."""
        import torch

        cls = self.classes
        return self.sums[cls] / self.counts[cls, None].to(torch.float64)

    def scores(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[B, n_classes] float64: -||x - mean_y||^2 for seen classes, -inf for the others."""
        import torch

        x = x_BD.reshape(len(x_BD), -1).to(self.device, torch.float64)
        out = torch.full((len(x), self.n_classes), float("-inf"), dtype=torch.float64, device=self.device)
        cls = self.classes
        if cls:
            mu = self.means()
            out[:, cls] = -(x.pow(2).sum(1, keepdim=True) - 2.0 * x @ mu.T + mu.pow(2).sum(1)[None, :])
        return out.to(x_BD.device)

    def state_dict(self) -> dict:
        return {"sums": None if self.sums is None else self.sums.cpu(),
                "counts": None if self.counts is None else self.counts.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.sums = None if state["sums"] is None else state["sums"].to(self.device)
        self.counts = None if state["counts"] is None else state["counts"].to(self.device)


@register("ncm", help="Nearest class mean on the flattened pixels (Euclidean; the floor to clear)",
          uses_training=("eval_mb_size",))
def build_ncm(ctx: StrategyContext) -> StreamingNCM:
    """Nearest class mean on the flattened pixels, Euclidean (Mensink et al. 2013; the NCM floor of
    Rebuffi et al. 2017 and Prabhu et al. 2024): exact running class means, no stored images.

    No keys: the protocol's backbone, optimizer and epochs are ignored (nothing is trained).
    """
    return StreamingNCM(ctx.n_classes, device=ctx.device)
