"""Streaming LDA on fixed features: no backpropagation, so nothing to forget but also
nothing learned beyond class means and one shared covariance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from cil.strategies.registry import StrategyContext, register
from cil.typecheck import Fraction, PositiveInt

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate
else:  # the registry resolves hints at import time; avalanche is imported only inside builders
    SupervisedTemplate = Any


def fixed_feature_extractor(features: str, image_shape: tuple[int, int, int], n_features: int, seed: int):
    """A frozen extractor: flattened pixels, or ReLU random features of them.

    Deep SLDA uses a pretrained CNN; nothing is pretrained here, so the features are either the
    pixels themselves or a seeded random projection followed by ReLU (random features,
    Rahimi & Recht 2007), which lets a linear discriminant separate curved class boundaries.
    """
    import torch
    from torch import nn

    c, h, w = image_shape
    if features == "pixels":
        return nn.Flatten(), c * h * w
    generator = torch.Generator().manual_seed(seed)
    projection = nn.Linear(c * h * w, n_features)
    with torch.no_grad():
        # Unit-variance Gaussian weights scaled by 1/sqrt(fan-in): pre-activations of O(1).
        projection.weight.copy_(torch.randn(n_features, c * h * w, generator=generator) / (c * h * w) ** 0.5)
        projection.bias.copy_(torch.randn(n_features, generator=generator) * 0.5)
    model = nn.Sequential(nn.Flatten(), projection, nn.ReLU())
    model.requires_grad_(False)
    return model, n_features


@register("slda", help="Streaming LDA on fixed pixel or random features (Hayes & Kanan 2020)",
          uses_training=("train_mb_size", "eval_mb_size"), cost=8)
def build_slda(
    ctx: StrategyContext,
    *,
    # Random features by default: a linear discriminant on raw MNIST pixels is clearly the
    # weaker classifier (compare with `--set strategies.slda.features=pixels`).
    features: Literal["pixels", "random"] = "random",
    # Width of the random projection (features: random only). Each sample updates an
    # n_features x n_features covariance, so the cost grows with its square.
    n_features: PositiveInt = 1024,
    shrinkage: Fraction = 1e-4,  # Avalanche StreamingLDA default, the value of Hayes & Kanan 2020
    streaming_update_sigma: bool = True,  # update the shared covariance with every sample
) -> SupervisedTemplate:
    """Deep Streaming LDA (Hayes & Kanan 2020, CVPR-W): running class means and a shared
    covariance over frozen features, one sample at a time; prediction is linear discriminant
    analysis.

    Each sample is seen once: the protocol's ``train_epochs`` is ignored (more passes would
    count samples twice). Uses no optimizer and ignores the protocol's backbone.
    """
    import torch
    from avalanche.training import StreamingLDA

    extractor, dim = fixed_feature_extractor(features, ctx.image_shape, n_features, ctx.seed)
    return StreamingLDA(
        slda_model=extractor,
        criterion=torch.nn.CrossEntropyLoss(),
        input_size=dim,
        num_classes=ctx.n_classes,
        shrinkage_param=shrinkage,
        streaming_update_sigma=streaming_update_sigma,
        train_epochs=1,
        train_mb_size=ctx.train_mb_size,
        eval_mb_size=ctx.eval_mb_size,
        device=ctx.device,
        plugins=list(ctx.plugins) or None,
        evaluator=ctx.evaluator,
    )
