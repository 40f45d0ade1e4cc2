"""Image grids as PNG files, written with zlib alone (no imaging library needed)."""

from __future__ import annotations

import os
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from varc.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from varc.model import VARModel


def make_grid(images: Tensor, nrow: int, padding: int = 2, pad_value: float = 0.5) -> np.ndarray:
    """[N, C, H, W] floats in [0, 1] -> uint8 [rows*H', nrow*W', C] with ``nrow`` images per row."""
    x = images.detach().float().clamp(0, 1).cpu()
    N, C, H, W = x.shape
    rows = -(-N // nrow)
    Hp, Wp = H + padding, W + padding
    grid = torch.full((C, rows * Hp + padding, nrow * Wp + padding), pad_value)
    for i in range(N):
        r, c = divmod(i, nrow)
        grid[:, padding + r * Hp : padding + r * Hp + H, padding + c * Wp : padding + c * Wp + W] = x[i]
    return (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike, pixels: np.ndarray, scale: int = 1) -> None:
    """Write uint8 pixels [H, W] / [H, W, 1] (grey) or [H, W, 3] (RGB) as a PNG, atomically.

    ``scale`` > 1 enlarges each pixel to a ``scale`` x ``scale`` block (small images stay legible).
    """
    a = np.asarray(pixels, dtype=np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if scale > 1:
        a = a.repeat(scale, axis=0).repeat(scale, axis=1)
    if a.ndim == 2:
        colour_type = 0
    elif a.ndim == 3 and a.shape[2] == 3:
        colour_type = 2
    else:
        raise ValueError(f"pixels must be [H, W], [H, W, 1] or [H, W, 3], got {a.shape}")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    atomic_write_bytes(path, png)


def save_grid(images: Tensor, path: str | os.PathLike, nrow: int, scale: int = 1, padding: int = 2) -> None:
    """Write images [N, C, H, W] in [0, 1] as one PNG grid, ``nrow`` per row."""
    write_png(path, make_grid(images, nrow, padding), scale=scale)


@torch.no_grad()
def sample_grid(model: "VARModel", path: str | os.PathLike, classes: list[int] | None = None, per_class: int = 10,
                temperature: float = 1.0, top_k: int | None = None, cfg: float = 0.0, seed: int = 0,
                scale: int = 2) -> Tensor:
    """Draw ``per_class`` samples of every class (one row per class) and write them as a PNG grid."""
    classes = list(model.classes if classes is None else classes)
    labels = [c for c in classes for _ in range(per_class)]
    g = torch.Generator().manual_seed(seed)
    images = model.sample(labels, temperature=temperature, top_k=top_k, cfg=cfg, generator=g)
    save_grid(images, path, nrow=per_class, scale=scale)
    return images
