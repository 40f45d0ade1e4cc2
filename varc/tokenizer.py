"""Multi-scale residual VQ-VAE: images <-> one token map per scale (Tian et al. 2024, sec. 3.2).

Encoder f = E(x) is a [B, Cv, h, w] latent map. Quantisation walks the scales pn_1 < ... < pn_K
with one shared codebook: the residual r (initially f) is area-downsampled to pn_k x pn_k, each
vector takes its nearest code, the code map is upsampled back to h x w, passed through a small
convolution phi_k and added to the running reconstruction f_hat (and subtracted from r).
The decoder maps f_hat to the image. The same f_hat, built scale by scale from tokens, is the
transformer's teacher-forcing input: scale k+1's input is f_hat through scale k, downsampled to
pn_{k+1} (:meth:`MultiScaleVQVAE.add_scale` then :meth:`MultiScaleVQVAE.next_scale_input`, the one
place that step is written; :meth:`MultiScaleVQVAE.teacher_inputs` does it for a whole image).

No batch statistics anywhere (GroupNorm only), so an image's tokens never depend on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varc.config import VARConfig


def _groups(ch: int) -> int:
    return next(g for g in (8, 4, 2, 1) if ch % g == 0)


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(ch), ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(ch), ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    """conv -> [stride-2 conv, ResBlock] x downsample -> 1x1 conv to latent_dim channels."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        ch = cfg.tok_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch, 3, padding=1)]
        c = ch
        for i in range(cfg.downsample):
            c_out = ch * 2
            layers += [nn.SiLU(), nn.Conv2d(c, c_out, 3, stride=2, padding=1), ResBlock(c_out)]
            c = c_out
        if cfg.downsample == 0:
            layers.append(ResBlock(c))
        layers += [nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x_BCHW: Tensor) -> Tensor:
        return self.net(x_BCHW)


class Decoder(nn.Module):
    """Mirror of the encoder with nearest-neighbour upsampling; outputs logits of pixel intensity."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        ch = cfg.tok_channels
        widths = [ch] + [ch * 2] * cfg.downsample  # width at each resolution, full -> latent
        c = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, c, 3, padding=1), ResBlock(c)]
        for i in reversed(range(cfg.downsample)):
            c_out = widths[i]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c_out, 3, padding=1)]
            if i:
                layers.append(ResBlock(c_out))
            c = c_out
        layers += [nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z_BChw: Tensor) -> Tensor:
        return self.net(z_BChw)


class Phi(nn.Module):
    """phi_k(h) = (1 - r) h + r conv3x3(h): the per-scale refinement of an upsampled code map."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: Tensor) -> Tensor:
        return (1.0 - self.ratio) * h + self.ratio * self.conv(h)


@dataclass
class QuantOut:
    """What one pass of residual quantisation returns."""

    f_hat: Tensor  # [B, Cv, h, w], straight-through: value of f_hat, gradient of f
    tokens: list[Tensor]  # one [B, pn, pn] LongTensor per scale
    vq_loss: Tensor  # scalar
    residuals: Tensor  # [N, Cv] the (detached) vectors that were quantised, for dead-code restarts


class MultiScaleVQVAE(nn.Module):
    """Encoder, shared codebook with per-scale phi, decoder."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_nums = cfg.patch_nums
        self.side = cfg.latent_side
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.codebook = nn.Embedding(cfg.vocab_size, cfg.latent_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / cfg.vocab_size, 1.0 / cfg.vocab_size)
        self.phis = nn.ModuleList(Phi(cfg.latent_dim, cfg.phi_ratio) for _ in cfg.patch_nums)

    # --- geometry -----------------------------------------------------------------------------
    def _pad(self, x: Tensor) -> Tensor:
        p = self.cfg.padded_size - x.shape[-1]
        if x.shape[-1] != self.cfg.image_size or x.shape[-2] != self.cfg.image_size:
            raise ValueError(
                f"images must be {self.cfg.image_size}x{self.cfg.image_size}, got {tuple(x.shape[-2:])}"
            )
        if x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"images must have {self.cfg.in_channels} channel(s), got {x.shape[1]}")
        return F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2)) if p else x

    def _crop(self, x: Tensor) -> Tensor:
        p = self.cfg.padded_size - self.cfg.image_size
        return x[..., p // 2 : p // 2 + self.cfg.image_size, p // 2 : p // 2 + self.cfg.image_size] if p else x

    def _down(self, f: Tensor, pn: int) -> Tensor:
        return f if pn == self.side else F.interpolate(f, size=(pn, pn), mode="area")

    def _up(self, h: Tensor) -> Tensor:
        return h if h.shape[-1] == self.side else F.interpolate(h, size=(self.side, self.side), mode="bicubic")

    def code_map(self, k: int, idx_Bpp: Tensor) -> Tensor:
        """Scale k's contribution to f_hat: phi_k(upsample(codebook[idx])) -> [B, Cv, h, w]."""
        h_BCpp = self.codebook(idx_Bpp).permute(0, 3, 1, 2)
        return self.phis[k](self._up(h_BCpp))

    def add_scale(self, f_hat: Tensor | None, k: int, idx_Bpp: Tensor) -> Tensor:
        """f_hat through scale k: ``f_hat`` of scales 0..k-1 (None when k = 0) plus scale k's
        contribution :meth:`code_map` ``(k, idx_Bpp)`` -> [B, Cv, h, w]."""
        h = self.code_map(k, idx_Bpp)
        return h if f_hat is None else f_hat + h

    def next_scale_input(self, f_hat: Tensor, k: int) -> Tensor:
        """The transformer's input for the positions of scale k+1: ``f_hat`` through scale k
        (:meth:`add_scale`) area-downsampled to pn_{k+1} x pn_{k+1}, one row per position in
        raster order -> [B, pn_{k+1}^2, Cv]. Scale 0 has no input (its position 0 is the class
        start token), so k runs over 0..K-2."""
        if not 0 <= k < len(self.patch_nums) - 1:
            raise ValueError(f"scale {k} has no next scale: k must lie in 0..{len(self.patch_nums) - 2}")
        return self._down(f_hat, self.patch_nums[k + 1]).flatten(2).transpose(1, 2)

    # --- images -> tokens -----------------------------------------------------------------------
    def features(self, images: Tensor) -> Tensor:
        """Encoder output f: [B, Cv, h, w]."""
        return self.encoder(self._pad(images))

    def nearest(self, z_NC: Tensor) -> Tensor:
        """Index of the nearest code (squared L2) for each row."""
        w_VC = self.codebook.weight
        d_NV = z_NC.pow(2).sum(1, keepdim=True) - 2.0 * z_NC @ w_VC.t() + w_VC.pow(2).sum(1)[None]
        return d_NV.argmin(1)

    def quantize(self, f_BChw: Tensor) -> QuantOut:
        """Residual quantisation over the scales; VQ loss = codebook term + beta * commitment."""
        B, C = f_BChw.shape[:2]
        f_sg = f_BChw.detach()
        rest = f_sg.clone()
        f_hat = torch.zeros_like(f_sg)
        tokens: list[Tensor] = []
        residuals: list[Tensor] = []
        vq_loss = f_BChw.new_zeros(())
        for k, pn in enumerate(self.patch_nums):
            r_NC = self._down(rest, pn).permute(0, 2, 3, 1).reshape(-1, C)
            idx_Bpp = self.nearest(r_NC).view(B, pn, pn)
            h = self.code_map(k, idx_Bpp)
            f_hat = f_hat + h
            rest = rest - h.detach()
            vq_loss = vq_loss + F.mse_loss(f_hat, f_sg) + self.cfg.commit_beta * F.mse_loss(f_BChw, f_hat.detach())
            tokens.append(idx_Bpp)
            residuals.append(r_NC)
        f_st = f_BChw + (f_hat - f_BChw).detach()  # straight-through to the encoder
        return QuantOut(f_st, tokens, vq_loss / len(self.patch_nums), torch.cat(residuals))

    @torch.no_grad()
    def encode(self, images: Tensor, noise_std: float = 0.0, generator: torch.Generator | None = None) -> list[Tensor]:
        """Token maps, one [B, pn, pn] LongTensor per scale. ``noise_std`` > 0 adds Gaussian noise
        of that standard deviation to the encoder features before quantisation (likelihood smoothing)."""
        f = self.features(images)
        if noise_std > 0:
            dev = generator.device if generator is not None else f.device
            f = f + noise_std * torch.randn(f.shape, generator=generator, device=dev, dtype=f.dtype).to(f.device)
        return self.quantize(f).tokens

    # --- tokens -> f_hat, images, teacher-forcing inputs ----------------------------------------
    def f_hat(self, tokens: list[Tensor]) -> Tensor:
        """f_hat through the last scale of ``tokens``: [B, Cv, h, w]."""
        f = None
        for k, idx in enumerate(tokens):
            f = self.add_scale(f, k, idx)
        return f

    def decode_f(self, f_hat: Tensor) -> Tensor:
        return self._crop(torch.sigmoid(self.decoder(f_hat)))

    @torch.no_grad()
    def decode(self, tokens: list[Tensor]) -> Tensor:
        """Images in [0, 1] from a full list of token maps."""
        return self.decode_f(self.f_hat(tokens))

    def forward(self, images: Tensor) -> tuple[Tensor, QuantOut]:
        """Reconstruction in [0, 1] and the quantisation record (for training)."""
        q = self.quantize(self.features(images))
        return self.decode_f(q.f_hat), q

    @torch.no_grad()
    def teacher_inputs(self, tokens: list[Tensor], num_scales: int | None = None) -> Tensor:
        """Inputs for positions 1..l-1 of the first ``num_scales`` scales: [B, l - 1, Cv].

        Scale k's input is f_hat built from scales < k, area-downsampled to pn_k (position 0 is the
        class start token and takes no input; see :meth:`next_scale_input`). Only tokens of scales
        < num_scales are read.
        """
        K = len(self.patch_nums) if num_scales is None else num_scales
        B = tokens[0].shape[0]
        parts: list[Tensor] = []
        f_hat = None
        for k in range(K - 1):
            f_hat = self.add_scale(f_hat, k, tokens[k])
            parts.append(self.next_scale_input(f_hat, k))
        if not parts:
            return self.codebook.weight.new_zeros(B, 0, self.cfg.latent_dim)
        return torch.cat(parts, 1)
