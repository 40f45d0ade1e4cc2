"""The second shape of strategy: classifiers that do not train by SGD.

A builder registered with ``@register(..., uses_training=(...))`` may return a
:class:`ScoreClassifier` instead of an Avalanche template. The suite then does the rest: it
hands each experience's images to ``update`` (once, all of them), and wraps ``scores`` in a
model for Avalanche's evaluation loop, with the runner's evaluator and plugins (task-incremental
masking included), so the classifier never imports Avalanche.

Input format, for ``update`` and ``scores``: images are a float32 tensor [B, C, H, W] with
values in [0, 1] (grayscale C = 1), labels an int64 tensor [B] of class ids in 0..n_classes-1;
``scores`` returns [B, n_classes] (higher is more likely), ``-inf`` for classes not seen yet.

NCM, RanDumb and the per-class-VAE classifier are written this way (``ncm.py``,
``randumb.py``, ``vae_gc.py``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cil.errors import UserError

if TYPE_CHECKING:
    import torch

    from cil.strategies.registry import StrategyContext


class ScoreClassifier:
    """Base of a non-SGD strategy: ``update`` per experience, ``scores`` per minibatch.

    Optional capabilities, declared by class attributes (the runner reads the declaration, it
    never probes for methods):
    - ``checkpoints = True``: ``state_dict`` / ``load_state_dict`` (tensors and plain types
      only), so an interrupted cell resumes after its last finished experience;
    - ``saves_model = True``: ``model_bytes()``, written beside the results as ``model.pt``;
    - ``reports_inference = True``: ``inference_report(images, labels)`` on the final model,
      rows of ``inference.csv`` (setting, accuracy, images_per_second, ...).
    """

    checkpoints: ClassVar[bool] = False
    saves_model: ClassVar[bool] = False
    reports_inference: ClassVar[bool] = False

    def update(self, images: "torch.Tensor", labels: "torch.Tensor") -> None:
        """Learn from one experience: all of its training images [B, C, H, W] and labels [B]."""
        raise NotImplementedError(f"{type(self).__name__} must implement update(images, labels)")

    def scores(self, images: "torch.Tensor") -> "torch.Tensor":
        """[B, n_classes] class scores of images [B, C, H, W]; -inf for classes not seen yet."""
        raise NotImplementedError(f"{type(self).__name__} must implement scores(images)")

    def state_dict(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} declares checkpoints but has no state_dict()")

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} declares checkpoints but has no load_state_dict()")

    def model_bytes(self) -> bytes:
        raise NotImplementedError(f"{type(self).__name__} declares saves_model but has no model_bytes()")

    def inference_report(self, images: "torch.Tensor", labels: "torch.Tensor") -> list[dict]:
        raise NotImplementedError(f"{type(self).__name__} declares reports_inference but has no inference_report()")


@dataclass(frozen=True)
class Capabilities:
    """What the runner may ask of a built strategy beyond train/eval."""

    checkpoints: bool = False  # checkpoint_state() / load_checkpoint_state(state)
    model: bool = False  # model_bytes() -> the file model.pt
    inference: bool = False  # inference_report(test_stream) -> rows of inference.csv


def capabilities(strategy: Any) -> Capabilities:
    """A strategy's declared capabilities: its ScoreClassifier's declaration; none for an
    Avalanche SGD strategy."""
    plain, _ = _classes()
    if isinstance(strategy, plain):
        c = strategy.classifier
        return Capabilities(checkpoints=c.checkpoints, model=c.saves_model, inference=c.reports_inference)
    return Capabilities()


def _score_loss(scores_BC, y_B):
    """Cross-entropy of the scores (Avalanche reports an evaluation loss); -inf made finite."""
    import torch

    return torch.nn.functional.cross_entropy(scores_BC.clamp_min(-1e9), y_B)


def stream_test_images(test_stream) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Every test image and label of a stream, experience after experience."""
    import torch

    xs, ys = zip(*(collect(exp.dataset) for exp in test_stream))
    return torch.cat(xs), torch.cat(ys)


def collect(dataset, batch_size: int = 2048) -> tuple["torch.Tensor", "torch.Tensor"]:
    """All (images, labels) of an Avalanche dataset as two tensors, in the dataset's order."""
    import torch
    from torch.utils.data import DataLoader

    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(batch[0])
        ys.append(batch[1])
    return torch.cat(xs), torch.cat(ys).long()


@functools.lru_cache(maxsize=None)
def _classes():
    """Build the nn.Module and strategy classes on first use (they subclass torch/avalanche types)."""
    import torch
    from avalanche.training.templates import SupervisedTemplate as Template
    from torch import nn

    class ScoreModule(nn.Module):
        """forward(images) -> classifier.scores(images). The classifier is a plain attribute, not
        a submodule: it keeps its own device and state, and Avalanche's ``to`` / ``train`` /
        ``eval`` have nothing to act on."""

        def __init__(self, classifier: ScoreClassifier, n_classes: int) -> None:
            super().__init__()
            self.classifier, self.n_classes = classifier, n_classes

        def forward(self, x):
            with torch.no_grad():
                out = self.classifier.scores(x)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), self.n_classes):
                got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
                raise UserError(f"{type(self.classifier).__name__}.scores returned {got} for {len(x)} images; "
                                f"expected a tensor [{len(x)}, {self.n_classes}]: one score per class of the "
                                "dataset, -inf for classes not seen yet")
            return out

    class ScoreStrategy(Template):
        """Avalanche's experience and evaluation bookkeeping around a ScoreClassifier; no SGD
        epoch ever runs (``update`` replaces the training loop)."""

        def __init__(self, *, ctx: "StrategyContext", classifier: ScoreClassifier, label: str) -> None:
            self.ctx, self.classifier, self.label = ctx, classifier, label
            dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)  # training is update()'s
            super().__init__(model=ScoreModule(classifier, ctx.n_classes), optimizer=dummy, criterion=_score_loss,
                             train_mb_size=ctx.train_mb_size, train_epochs=1, eval_mb_size=ctx.eval_mb_size,
                             device=ctx.device, plugins=list(ctx.plugins) or None,  # no SGD epochs to watch
                             evaluator=ctx.evaluator)
            self.exp_index = 0

        def make_optimizer(self, **kwargs):
            pass  # the dummy optimizer must not be handed the model's (absent) parameters

        def _train_exp(self, experience, eval_streams=None, **kwargs):
            images, labels = collect(experience.dataset)
            t0 = time.perf_counter()
            self.classifier.update(images, labels)
            if self.ctx.progress:
                print(f"  [{self.label}] exp {self.exp_index + 1}: updated classes {sorted(set(labels.tolist()))} "
                      f"with {len(labels)} images in {time.perf_counter() - t0:.1f} s", flush=True)
            self.exp_index += 1

        def model_bytes(self) -> bytes:
            return self.classifier.model_bytes()

        def inference_report(self, test_stream) -> list[dict]:
            return self.classifier.inference_report(*stream_test_images(test_stream))

    class CheckpointedScoreStrategy(ScoreStrategy):
        """The same, with the runner's resume hooks (for classifiers that declare checkpoints)."""

        def checkpoint_state(self) -> dict:
            return {"classifier": self.classifier.state_dict(), "exp_index": self.exp_index}

        def load_checkpoint_state(self, state: dict) -> None:
            self.classifier.load_state_dict(state["classifier"])
            self.exp_index = int(state["exp_index"])

    return ScoreStrategy, CheckpointedScoreStrategy


def as_avalanche(ctx: "StrategyContext", classifier: ScoreClassifier) -> Any:
    """The Avalanche strategy the runner drives for ``classifier`` (the registry calls this)."""
    plain, checkpointed = _classes()
    cls = checkpointed if classifier.checkpoints else plain
    return cls(ctx=ctx, classifier=classifier, label=ctx.name or type(classifier).__name__)
