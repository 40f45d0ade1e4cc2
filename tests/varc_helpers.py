"""Small VAR models shared by the model and explanation tests (imported, not collected)."""

from __future__ import annotations

import torch

from varc.config import VARConfig
from varc.model import VARModel


def digits_config(head: str = "lora:2", **kw) -> VARConfig:
    """A VAR for 8x8 greyscale images: a 4x4 latent map, scales 1-4 (30 tokens), 16 codes."""
    base = dict(in_channels=1, image_size=8, downsample=1, tok_channels=8, latent_dim=4, vocab_size=16,
                patch_nums=(1, 2, 3, 4), width=32, depth=2, num_heads=2, head=head)
    return VARConfig(**{**base, **kw})


def scramble(model: VARModel, seed: int = 1) -> VARModel:
    """Give every parameter random non-trivial values (zero-initialised adapters included),
    so that classes, adapters, scales and positions all differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model
