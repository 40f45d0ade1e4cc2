"""Nearest class mean on the flattened pixels: the floor any class-incremental method must clear.

Also holds the thin Avalanche wrapper shared by this package's non-SGD strategies (NCM,
RanDumb, the per-class-VAE classifier): their mathematics lives in a plain-torch "core" with
``update(images, labels)`` (once per experience, on all of its images) and ``scores(images)``
(a [B, n_classes] matrix, -inf for classes not seen yet); the wrapper hands Avalanche a model
that returns those scores and replaces Avalanche's SGD epochs by one call to ``update``, the
way the VAR classifier strategy (``cil/strategies/generative.py``) does.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from cil.strategies.registry import StrategyContext, register

if TYPE_CHECKING:
    import torch
    from avalanche.training.templates import SupervisedTemplate
else:  # the registry resolves hints at import time; avalanche is imported only inside builders
    SupervisedTemplate = Any


class StreamingNCM:
    """Exact running class means of flattened images; a class's score is minus the squared
    Euclidean distance to its mean (nearest class mean, e.g. Mensink et al. 2013).

    Keeps per-class sums and counts in float64, so the means after any sequence of updates
    equal the means of all images seen, whatever the order; no image is stored.
    """

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


# -- the Avalanche wrapper shared by the non-SGD strategies -------------------------------------

def _score_loss(scores_BC, y_B):
    """Cross-entropy of the scores (Avalanche reports an evaluation loss); -inf made finite."""
    import torch

    return torch.nn.functional.cross_entropy(scores_BC.clamp_min(-1e9), y_B)


@functools.lru_cache(maxsize=None)
def _classes():
    """Build the nn.Module and strategy classes on first use (they subclass torch/avalanche types)."""
    import torch
    from avalanche.training.templates import SupervisedTemplate as Template
    from torch import nn

    from cil.strategies.generative import _collect

    class ScoreModule(nn.Module):
        """forward(images) -> core.scores(images): [B, n_classes], -inf for unseen classes.

        The core is a plain attribute, not a submodule: it keeps its own device and state, and
        Avalanche's ``model.to(device)`` / ``train()`` / ``eval()`` have nothing to act on.
        """

        def __init__(self, core) -> None:
            super().__init__()
            self.core = core

        def forward(self, x):
            with torch.no_grad():
                return self.core.scores(x)

    class ScoreStrategy(Template):
        """Avalanche's experience/evaluation bookkeeping around a core; no SGD epoch ever runs."""

        def __init__(self, *, ctx: StrategyContext, core, label: str) -> None:
            self.ctx, self.core, self.label = ctx, core, label
            dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)  # training is the core's
            super().__init__(model=ScoreModule(core), optimizer=dummy, criterion=_score_loss,
                             train_mb_size=ctx.train_mb_size, train_epochs=1, eval_mb_size=ctx.eval_mb_size,
                             device=ctx.device, plugins=list(ctx.plugins) or None,  # no SGD epochs to watch
                             evaluator=ctx.evaluator)
            self.exp_index = 0

        def make_optimizer(self, **kwargs):
            pass  # the dummy optimizer must not be handed the model's (absent) parameters

        def _log(self, msg: str) -> None:
            if self.ctx.progress:
                print(f"  [{self.label}] {msg}", flush=True)

        def _train_exp(self, experience, eval_streams=None, **kwargs):
            images, labels = _collect(experience.dataset)
            t0 = time.perf_counter()
            self.core.update(images, labels)
            self._log(f"exp {self.exp_index + 1}: updated classes {sorted(set(labels.tolist()))} "
                      f"with {len(labels)} images in {time.perf_counter() - t0:.1f} s")
            self.exp_index += 1

    class CheckpointedScoreStrategy(ScoreStrategy):
        """The same, with the runner's resume hooks (for cores whose state is small)."""

        def checkpoint_state(self) -> dict:
            return {"core": self.core.state_dict(), "exp_index": self.exp_index}

        def load_checkpoint_state(self, state: dict) -> None:
            self.core.load_state_dict(state["core"])
            self.exp_index = int(state["exp_index"])

    return ScoreModule, ScoreStrategy, CheckpointedScoreStrategy


def score_strategy(ctx: StrategyContext, core, label: str, *, checkpoints: bool = True) -> SupervisedTemplate:
    """An Avalanche strategy whose training is ``core.update`` per experience and whose model
    returns ``core.scores``; ``checkpoints`` adds the runner's resume hooks (core.state_dict)."""
    _, plain, checkpointed = _classes()
    return (checkpointed if checkpoints else plain)(ctx=ctx, core=core, label=label)


@register("ncm", help="Nearest class mean on the flattened pixels (Euclidean; the floor to clear)")
def build_ncm(ctx: StrategyContext) -> SupervisedTemplate:
    """Nearest class mean on the flattened pixels, Euclidean (Mensink et al. 2013; the NCM floor of
    Rebuffi et al. 2017 and Prabhu et al. 2024): exact running class means, no stored images.

    No keys: the protocol's backbone, optimizer and epochs are ignored (nothing is trained).
    """
    return score_strategy(ctx, StreamingNCM(ctx.n_classes, device=ctx.device), ctx.name or "ncm")
