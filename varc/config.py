"""The VAR model's configuration: one frozen, keyword-only record, plus named presets.

A configuration fixes every shape in the model (tokenizer, transformer, per-class heads), so
a checkpoint is just ``{config, classes, state_dict}``. Presets are starting points sized for
small images on a CPU; override any field: ``preset("mnist", width=128)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

HEAD_KINDS = ("embedding", "lora", "full")


def parse_head(spec: str) -> tuple[str, int]:
    """``"embedding"`` -> ("embedding", 0); ``"lora:4"`` -> ("lora", 4); ``"full"`` -> ("full", 0)."""
    kind, _, rank = spec.partition(":")
    if kind == "lora":
        if not rank.isdigit() or int(rank) < 1:
            raise ValueError(f"head {spec!r}: write the LoRA rank as a positive integer, e.g. 'lora:4'")
        return "lora", int(rank)
    if kind in ("embedding", "full") and not rank:
        return kind, 0
    raise ValueError(f"head {spec!r} is not one of 'embedding', 'lora:<rank>', 'full'")


@dataclass(frozen=True, kw_only=True)
class VARConfig:
    """Shapes and defaults of a VAR model (Tian et al. 2024) sized for small images.

    Tokenizer: ``downsample`` stride-2 stages map an ``image_size`` image to a latent map of
    side ``ceil(image_size / 2**downsample)`` (images are zero-padded, centred, to a multiple
    of ``2**downsample`` and cropped back after decoding: 28x28 MNIST gives a 7x7 latent map);
    ``patch_nums`` are the quantisation scales, first 1, last the latent side.
    Transformer: ``width`` x ``depth`` AdaLN blocks; ``head`` is each class's own capacity:
    ``embedding`` (class embedding only), ``lora:<r>`` (plus rank-r adapters on every trunk
    linear) or ``full`` (plus a full-rank per-class delta on every trunk linear, i.e. a
    per-class copy of the trunk fine-tuned from it).
    """

    # images
    in_channels: int = 1
    image_size: int = 28
    # tokenizer (multi-scale residual VQ-VAE)
    downsample: int = 2
    tok_channels: int = 16
    latent_dim: int = 16
    vocab_size: int = 256
    patch_nums: tuple[int, ...] = (1, 2, 3, 5, 7)
    phi_ratio: float = 0.5
    commit_beta: float = 0.25
    # transformer
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    head: str = "lora:4"
    label_drop: float = 0.1
    # execution
    device: str = "cpu"  # "cpu" | "cuda" | "auto"
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16"

    def __post_init__(self) -> None:
        for name in ("in_channels", "image_size", "tok_channels", "latent_dim", "width", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.downsample < 0:
            raise ValueError(f"downsample must be >= 0 (stride-2 stages), got {self.downsample}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.phi_ratio <= 1.0:
            raise ValueError(f"phi_ratio {self.phi_ratio} must lie in [0, 1]")
        if not self.commit_beta >= 0.0:
            raise ValueError(f"commit_beta must be >= 0, got {self.commit_beta}")
        object.__setattr__(self, "patch_nums", tuple(int(p) for p in self.patch_nums))
        pn = self.patch_nums
        if not pn or pn[0] != 1:
            raise ValueError(f"patch_nums {pn}: the first scale must be 1 (it holds the class start token)")
        if any(b <= a for a, b in zip(pn, pn[1:])):
            raise ValueError(f"patch_nums {pn} must be strictly increasing")
        if pn[-1] != self.latent_side:
            raise ValueError(
                f"patch_nums {pn} must end at the latent side {self.latent_side} "
                f"(= ceil(image_size {self.image_size} / 2**downsample {self.downsample}))"
            )
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be a multiple of num_heads {self.num_heads}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size {self.vocab_size} must be at least 2")
        if not 0.0 <= self.label_drop < 1.0:
            raise ValueError(f"label_drop {self.label_drop} must lie in [0, 1)")
        if self.device not in ("cpu", "auto") and not self.device.startswith("cuda"):
            raise ValueError(f"device {self.device!r}: use 'cpu', 'cuda', 'cuda:<n>' or 'auto'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision {self.precision!r}: use 'auto', 'fp32' or 'bf16'")
        parse_head(self.head)

    @property
    def latent_side(self) -> int:
        return math.ceil(self.image_size / 2**self.downsample)

    @property
    def padded_size(self) -> int:
        return self.latent_side * 2**self.downsample

    @property
    def seq_len(self) -> int:
        """L = sum of pn^2 over the scales: tokens per image."""
        return sum(p * p for p in self.patch_nums)

    @property
    def head_kind(self) -> str:
        return parse_head(self.head)[0]

    @property
    def head_rank(self) -> int:
        return parse_head(self.head)[1]

    def with_(self, **changes: Any) -> "VARConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint loads with ``torch.load(weights_only=True)``."""
        d = asdict(self)
        d["patch_nums"] = list(self.patch_nums)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VARConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VARConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


# Starting points; every field can be overridden.
PRESETS: dict[str, dict[str, Any]] = {
    # sklearn 8x8 digits: 4x4 latent map, L = 30
    "digits": dict(in_channels=1, image_size=8, downsample=1, tok_channels=16, latent_dim=8,
                   vocab_size=64, patch_nums=(1, 2, 3, 4), width=64, depth=2, num_heads=4),
    # MNIST 28x28 (handled directly, no padding): 7x7 latent map, L = 88
    "mnist": dict(in_channels=1, image_size=28, downsample=2, tok_channels=16, latent_dim=16,
                  vocab_size=256, patch_nums=(1, 2, 3, 5, 7), width=128, depth=2, num_heads=4),
    # 32x32 colour (CIFAR): 8x8 latent map, L = 130
    "cifar": dict(in_channels=3, image_size=32, downsample=2, tok_channels=32, latent_dim=32,
                  vocab_size=512, patch_nums=(1, 2, 3, 4, 6, 8), width=128, depth=4, num_heads=4),
}


def preset(name: str, **overrides: Any) -> VARConfig:
    """A named starting configuration with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return VARConfig(**{**PRESETS[name], **overrides})


def preset_for_shape(image_shape: tuple[int, int, int], **overrides: Any) -> VARConfig:
    """Pick a preset from an image shape (C, H, W): <=16 px -> digits, 3 channels -> cifar, else mnist."""
    c, h, w = image_shape
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    if h <= 16:
        base = dict(PRESETS["digits"])
    elif c == 3:
        base = dict(PRESETS["cifar"])
    else:
        base = dict(PRESETS["mnist"])
    base.update(in_channels=c, image_size=h)
    base.update(overrides)
    if "patch_nums" not in overrides:
        side = math.ceil(base["image_size"] / 2 ** base["downsample"])
        base["patch_nums"] = default_patch_nums(side)
    return VARConfig(**base)


def default_patch_nums(side: int) -> tuple[int, ...]:
    """Scales 1, 2, 3, ... then roughly geometric up to ``side`` (7 -> 1,2,3,5,7; 8 -> 1,2,3,4,6,8)."""
    table = {1: (1,), 2: (1, 2), 3: (1, 2, 3), 4: (1, 2, 3, 4), 5: (1, 2, 3, 5), 6: (1, 2, 3, 4, 6),
             7: (1, 2, 3, 5, 7), 8: (1, 2, 3, 4, 6, 8)}
    if side in table:
        return table[side]
    out = [1, 2, 3]
    while out[-1] < side:
        out.append(min(side, max(out[-1] + 1, round(out[-1] * 1.5))))
    return tuple(out)
