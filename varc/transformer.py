"""The shared trunk: a block-causal transformer with AdaLN class conditioning (Tian et al. 2024).

Input: the class start token at position 0 followed by the teacher-forcing inputs of positions
1..l-1 (``x_BlC``). Output: next-scale logits for positions 0..l-1 (``logits_BlV``). A token
attends to every token of its own scale and of earlier scales, so the outputs for the first m
scales depend only on the tokens of scales < m and running on the first l = sum_{k<=m} pn_k^2
positions is an exact prefix of the full pass.

Every linear layer is an :class:`AdaptedLinear` with a name (``b0_qkv``, ..., ``head``): a
class's head may add its own adapter to it (see ``varc.heads``), per sample in a batch.

Because of that exact-prefix property a pass may also stop after scale m and resume later: the
trunk returns, with the logits, every block's keys and values (a :class:`KVCache`, together a
:class:`LogitsAndCache`), and a later call given ``past=`` computes only the positions after the
cached ones, attending to the cached keys. Candidate pruning uses this so that survivors pay
only for their remaining scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varc.config import VARConfig

# key -> a per-sample low-rank pair (A_Bri, B_Bor), or one delta W_oi for the whole batch
# (a single class: its LoRA product B A or its full-rank delta, added to the weight)
Adapter = Union[tuple[Tensor, Tensor], Tensor]
Adapters = dict[str, Adapter]


@dataclass
class KVCache:
    """Keys and values ``[(k_NHlc, v_NHlc), ...]`` (one pair per block) of the first ``length``
    positions of N sequences, so that a later pass can continue them."""

    kv: list[tuple[Tensor, Tensor]]

    @property
    def length(self) -> int:
        return self.kv[0][0].shape[2]

    def __len__(self) -> int:
        return self.kv[0][0].shape[0]

    def select(self, rows: Tensor) -> "KVCache":
        """The cache of sequences ``rows`` only (in that order)."""
        return KVCache([(k[rows], v[rows]) for k, v in self.kv])

    @staticmethod
    def cat(parts: list["KVCache"], order: Tensor) -> "KVCache":
        """The caches of ``parts`` stacked, then rows reordered by ``order``."""
        return KVCache([(torch.cat([p.kv[i][0] for p in parts])[order], torch.cat([p.kv[i][1] for p in parts])[order])
                        for i in range(len(parts[0].kv))])


class LogitsAndCache(NamedTuple):
    """Logits [B, l - l0, V] of a pass over positions l0..l-1, and the cache of positions 0..l-1
    that continues it (``logits_BlV, cache = ...`` unpacks it)."""

    logits_BlV: Tensor
    cache: KVCache


class AdaptedLinear(nn.Linear):
    """y = W x + b, plus the adapter named ``key`` if the caller passes one."""

    def __init__(self, in_features: int, out_features: int, key: str) -> None:
        super().__init__(in_features, out_features)
        self.key = key

    def forward(self, x: Tensor, adapters: Adapters | None = None) -> Tensor:  # type: ignore[override]
        a = adapters.get(self.key) if adapters else None
        if a is None:
            return F.linear(x, self.weight, self.bias)
        if isinstance(a, Tensor):  # one class for the whole batch: merge into the weight
            return F.linear(x, self.weight + a, self.bias)
        y = F.linear(x, self.weight, self.bias)
        a_Bri, b_Bor = a  # LoRA, one (A, B) pair per sample
        x3 = x if x.dim() == 3 else x[:, None]
        d = torch.matmul(torch.matmul(x3, a_Bri.transpose(1, 2)), b_Bor.transpose(1, 2))
        return y + (d if x.dim() == 3 else d[:, 0])


class Attention(nn.Module):
    def __init__(self, width: int, num_heads: int, prefix: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = AdaptedLinear(width, 3 * width, prefix + "qkv")
        self.proj = AdaptedLinear(width, width, prefix + "proj")

    def forward(self, x_BlD: Tensor, mask_ll: Tensor, ad: Adapters | None,
                past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attention output for the l new positions, and keys/values of all positions (past + new)."""
        B, l, D = x_BlD.shape
        q, k, v = self.qkv(x_BlD, ad).view(B, l, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        o_BHlc = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_ll)
        return self.proj(o_BHlc.transpose(1, 2).reshape(B, l, D), ad), (k, v)


class Block(nn.Module):
    """Pre-norm attention + MLP; scale, shift and gate of both come from the class (AdaLN)."""

    def __init__(self, cfg: VARConfig, index: int) -> None:
        super().__init__()
        D, p = cfg.width, f"b{index}_"
        hidden = int(D * cfg.mlp_ratio)
        self.ln1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ln2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, cfg.num_heads, p)
        self.fc1 = AdaptedLinear(D, hidden, p + "fc1")
        self.fc2 = AdaptedLinear(hidden, D, p + "fc2")
        self.ada = AdaptedLinear(D, 6 * D, p + "ada")

    def forward(self, x_BlD: Tensor, cond_BD: Tensor, mask_ll: Tensor, ad: Adapters | None,
                past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        g1, g2, s1, s2, b1, b2 = self.ada(F.silu(cond_BD), ad)[:, None].chunk(6, dim=-1)
        a_BlD, kv = self.attn(self.ln1(x_BlD) * (1 + s1) + b1, mask_ll, ad, past)
        x_BlD = x_BlD + (1 + g1) * a_BlD
        h = F.gelu(self.fc1(self.ln2(x_BlD) * (1 + s2) + b2, ad))
        return x_BlD + (1 + g2) * self.fc2(h, ad), kv


class Trunk(nn.Module):
    """Embeddings, blocks and the AdaLN output head; everything shared by all classes."""

    def __init__(self, cfg: VARConfig) -> None:
        super().__init__()
        D, L, K = cfg.width, cfg.seq_len, len(cfg.patch_nums)
        self.word_embed = nn.Linear(cfg.latent_dim, D)
        self.pos_start = nn.Parameter(torch.empty(1, 1, D))
        self.pos_1LD = nn.Parameter(torch.empty(1, L, D))
        self.lvl_embed = nn.Embedding(K, D)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.depth))
        self.head_ln = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.head_ada = AdaptedLinear(D, 2 * D, "head_ada")
        self.head = AdaptedLinear(D, cfg.vocab_size, "head")

        lvl_L = torch.cat([torch.full((p * p,), k, dtype=torch.long) for k, p in enumerate(cfg.patch_nums)])
        self.register_buffer("lvl_L", lvl_L, persistent=False)
        self.register_buffer("mask_LL", lvl_L[:, None] >= lvl_L[None, :], persistent=False)
        self._init_weights(D)

    def _init_weights(self, D: int) -> None:
        std = math.sqrt(1 / D / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for p in (self.pos_start, self.pos_1LD, self.lvl_embed.weight):
            nn.init.trunc_normal_(p, std=std)
        self.head.weight.data.mul_(0.1)

    def adapted_shapes(self) -> dict[str, tuple[int, int]]:
        """Name -> (in_features, out_features) of every linear a class head may adapt."""
        return {m.key: (m.in_features, m.out_features) for m in self.modules() if isinstance(m, AdaptedLinear)}

    def forward(self, x_BlC: Tensor, cond_BD: Tensor, adapters: Adapters | None = None, *,
                past: KVCache | None = None) -> LogitsAndCache:
        """Logits [B, l - l0, V] for positions l0..l-1, where l = 1 + x_BlC.shape[1] and l0 is the
        length of ``past`` (0 without one), and the cache of positions 0..l-1 (computed anyway:
        a caller that does not continue the pass just drops it)."""
        l = x_BlC.shape[1] + 1
        l0 = past.length if past is not None else 0
        if not 0 <= l0 < l:
            raise ValueError(f"the cache holds {l0} positions; the inputs cover {l}")
        if l0 == 0:
            h_BlD = torch.cat([cond_BD[:, None] + self.pos_start, self.word_embed(x_BlC)], dim=1)
        else:
            h_BlD = self.word_embed(x_BlC[:, l0 - 1:])
        h_BlD = h_BlD + self.pos_1LD[:, l0:l] + self.lvl_embed(self.lvl_L[l0:l])[None]
        mask_ll = self.mask_LL[l0:l, :l]
        kv = []
        for i, blk in enumerate(self.blocks):
            h_BlD, kv_i = blk(h_BlD, cond_BD, mask_ll, adapters, past.kv[i] if past is not None else None)
            kv.append(kv_i)
        return LogitsAndCache(self._head(h_BlD, cond_BD, adapters), KVCache(kv))

    def _head(self, h_BlD: Tensor, cond_BD: Tensor, adapters: Adapters | None) -> Tensor:
        # The output head runs in fp32 even under autocast: log-likelihoods are sums of many
        # log-probabilities, and bf16 logits would blur them.
        with torch.autocast(device_type=h_BlD.device.type, enabled=False):
            cond_BD, h_BlD = cond_BD.float(), h_BlD.float()
            scale, shift = self.head_ada(F.silu(cond_BD), adapters)[:, None].chunk(2, dim=-1)
            return self.head(self.head_ln(h_BlD) * (1 + scale) + shift, adapters)
