"""The baseline CNN of the faithfulness experiment: ``cil.models`` 'cnn' trained jointly on all
classes with Adam. Its input gradients and occlusion maps are baselines for the TMI maps, and its
softmax is a second judge of every map."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from cil.models import build_backbone
from varc.train import as_image_tensor


def train_cnn(x_train, y_train, *, n_classes: int, image_shape: tuple[int, int, int], epochs: int = 1,
              batch_size: int = 128, lr: float = 1e-3, seed: int = 0, log=print):
    """The discriminative baseline (``cil.models`` 'cnn') trained jointly on all classes with Adam."""
    torch.manual_seed(seed)
    net = build_backbone("cnn", n_classes=n_classes, image_shape=image_shape)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        order = torch.randperm(len(x_train), generator=g)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"cnn epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f} ({time.perf_counter() - t0:.1f} s)")
    net.eval()
    return net


def train_cnn_on_dataset(ds, image_shape: tuple[int, int, int], *, epochs: int = 1, train_limit: int | None = None,
                         seed: int = 0, log: Callable[[str], None] = print):
    """:func:`train_cnn` on a dataset's training images (a random ``train_limit`` of them, if given)."""
    x = as_image_tensor(ds.x_train)
    y = torch.as_tensor(ds.y_train, dtype=torch.long)
    if train_limit:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:train_limit]
        x, y = x[keep], y[keep]
    log(f"training the baseline CNN on {len(x)} images for {epochs} epoch(s)")
    return train_cnn(x, y, n_classes=ds.n_classes, image_shape=image_shape, epochs=epochs, seed=seed, log=log)


def save_cnn(net, path: Path) -> None:
    """The CNN's state dict (tensors only), as :func:`load_cnn` reads it."""
    torch.save(net.state_dict(), path)


def load_cnn(path: Path, *, n_classes: int, image_shape: tuple[int, int, int]):
    """A CNN saved by :func:`save_cnn`, in eval mode; nothing but tensors is read back.

    Raises RuntimeError, KeyError or ValueError when the file is not such a state dict."""
    net = build_backbone("cnn", n_classes=n_classes, image_shape=image_shape)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()
