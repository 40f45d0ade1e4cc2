"""Backbones: shapes for every image size the protocols use, the features/classifier split,
and clear errors for bad names and keys."""

import pytest
import torch

from cil.errors import UserError
from cil.models import available_backbones, backbone_options, build_backbone

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_and_feature_shapes(name, shape):
    torch.manual_seed(0)
    model = build_backbone(name, n_classes=7, image_shape=shape)
    x = torch.rand(5, *shape)
    logits = model(x)
    assert logits.shape == (5, 7)
    feats = model.features(x)
    assert feats.shape == (5, model.feature_dim)
    assert isinstance(model.classifier, torch.nn.Linear)
    assert torch.allclose(model.classifier(feats), logits)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_backbone_trains(name):
    """A few Adam steps on one fixed batch drive its loss down: the parameters are wired up."""
    torch.manual_seed(0)
    model = build_backbone(name, n_classes=3, image_shape=(1, 8, 8))
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 3
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_mlp_hidden_sizes_and_dropout():
    model = build_backbone("mlp", n_classes=4, image_shape=(1, 28, 28), hidden=[64, 32, 16], dropout=0.3)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 64), (64, 32), (32, 16), (16, 4)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 3
    plain = build_backbone("mlp", n_classes=4, image_shape=(1, 28, 28))
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    assert [m.out_features for m in plain.modules() if isinstance(m, torch.nn.Linear)] == [256, 256, 4]


def test_cnn_options():
    model = build_backbone("cnn", n_classes=10, image_shape=(3, 32, 32), channels=[8, 16, 32], hidden=20)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 16), (16, 32)]
    assert model.feature_dim == 20
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_backbone_lists_choices():
    with pytest.raises(UserError) as exc:
        build_backbone("resnet", n_classes=10, image_shape=(1, 8, 8))
    msg = str(exc.value)
    assert "'resnet'" in msg
    for name in available_backbones():
        assert name in msg


def test_unknown_key_lists_allowed():
    with pytest.raises(UserError) as exc:
        build_backbone("mlp", n_classes=10, image_shape=(1, 8, 8), hiden=[10])
    msg = str(exc.value)
    assert "'hiden'" in msg
    for key in backbone_options("mlp"):
        assert key in msg


@pytest.mark.parametrize("name, kwargs", [
    ("mlp", {"hidden": 256}),
    ("mlp", {"hidden": [256, 0]}),
    ("mlp", {"dropout": 1.0}),
    ("cnn", {"channels": [8, 16, 32, 64]}),  # four 2x2 poolings do not fit 8x8 images
    ("cnn", {"hidden": -3}),
])
def test_bad_values_are_user_errors(name, kwargs):
    with pytest.raises(UserError):
        build_backbone(name, n_classes=10, image_shape=(1, 8, 8), **kwargs)


def test_context_builds_the_protocol_backbone():
    from cil.config import TrainingConfig
    from cil.strategies.registry import StrategyContext

    ctx = StrategyContext(n_classes=10, image_shape=(1, 28, 28),
                          training=TrainingConfig(backbone="cnn", backbone_args={"channels": [4]}))
    model = ctx.make_model()
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [4]
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
