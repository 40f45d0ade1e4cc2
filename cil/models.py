"""Discriminative backbones for the baselines, chosen by name in the protocol YAML.

Every backbone is ``classifier(features(x))``: ``features`` maps a float image batch
[B, C, H, W] in [0, 1] to a flat embedding [B, feature_dim], ``classifier`` is one linear
layer to ``n_classes`` logits. The split is what iCaRL needs (a feature extractor for its
nearest-mean-of-exemplars classifier, Rebuffi et al. 2017) and costs nothing elsewhere.

    model = build_backbone("mlp", n_classes=10, image_shape=(1, 28, 28), hidden=[256, 256])
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from cil.errors import UserError


class Backbone(nn.Module):
    """``classifier(features(x))`` with the two halves reachable by name."""

    def __init__(self, features: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.features = features
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, n_classes)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x_BCHW))


def _check_hidden(name: str, key: str, sizes: object) -> list[int]:
    if not isinstance(sizes, (list, tuple)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise UserError(f"backbone {name!r}: {key} must be a list of positive integers, got {sizes!r}")
    return list(sizes)


def _check_dropout(name: str, p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise UserError(f"backbone {name!r}: dropout must be a number in [0, 1), got {p!r}")
    return float(p)


def _mlp_block(sizes_in_out: list[tuple[int, int]], dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for d_in, d_out in sizes_in_out:
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


def mlp(*, n_classes: int, image_shape: tuple[int, int, int], hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0) -> Backbone:
    """Flatten, then Linear+ReLU(+Dropout) per entry of ``hidden``, then a linear head.

    The default 784-256-256-10 on MNIST is the MLP of Avalanche's split-MNIST reference
    baselines (ContinualAI/continual-learning-baselines, ``MLP(hidden_size=256, hidden_layers=2)``).
    """
    hidden = _check_hidden("mlp", "hidden", hidden)
    dropout = _check_dropout("mlp", dropout)
    c, h, w = image_shape
    dims = [c * h * w, *hidden]
    features = nn.Sequential(nn.Flatten(), *_mlp_block(list(zip(dims[:-1], dims[1:])), dropout))
    return Backbone(features, dims[-1], n_classes)


def cnn(*, n_classes: int, image_shape: tuple[int, int, int], channels: Sequence[int] = (32, 64),
        hidden: int = 128, dropout: float = 0.0) -> Backbone:
    """Per entry of ``channels``: 3x3 conv (same padding) + ReLU + 2x2 max-pool; then one
    hidden Linear+ReLU layer and a linear head.

    Two stages fit every image size used here: 8x8 -> 2x2, 28x28 -> 7x7, 32x32 -> 8x8.
    """
    channels = _check_hidden("cnn", "channels", channels)
    (hidden,) = _check_hidden("cnn", "hidden", [hidden])
    dropout = _check_dropout("cnn", dropout)
    c, h, w = image_shape
    layers: list[nn.Module] = []
    for c_out in channels:
        if h < 2 or w < 2:
            raise UserError(f"backbone 'cnn': {len(channels)} pooling stages are too many for "
                            f"{image_shape[1]}x{image_shape[2]} images; use fewer channels entries")
        layers += [nn.Conv2d(c, c_out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = c_out, h // 2, w // 2
    layers += [nn.Flatten(), *_mlp_block([(c * h * w, hidden)], dropout)]
    return Backbone(nn.Sequential(*layers), hidden, n_classes)


_BACKBONES: dict[str, Callable[..., Backbone]] = {"mlp": mlp, "cnn": cnn}


def available_backbones() -> list[str]:
    return sorted(_BACKBONES)


def backbone_options(name: str) -> dict[str, object]:
    """The YAML keys a backbone accepts, with their defaults."""
    if name not in _BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(available_backbones())}")
    params = inspect.signature(_BACKBONES[name]).parameters.values()
    return {p.name: p.default for p in params if p.name not in ("n_classes", "image_shape")}


def build_backbone(name: str, *, n_classes: int, image_shape: tuple[int, int, int], **kwargs) -> nn.Module:
    """A freshly initialised backbone ``name`` for ``image_shape`` = (C, H, W) inputs."""
    allowed = backbone_options(name)
    for key in kwargs:
        if key not in allowed:
            raise UserError(f"backbone {name!r}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    if len(image_shape) != 3:
        raise UserError(f"image_shape must be (C, H, W), got {image_shape!r}")
    return _BACKBONES[name](n_classes=n_classes, image_shape=tuple(int(s) for s in image_shape), **kwargs)
