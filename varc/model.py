"""VARModel: tokenizer + block-causal transformer + per-class heads, with exact likelihoods.

Next-scale prediction (Tian et al. 2024, "Visual Autoregressive Modeling"): an image is a
sequence of K token maps r_1..r_K of growing side pn_k, and

    log p(x | y) = sum_k sum_{i in scale k} log p(r_k[i] | r_<k, y),

each scale predicted in one step from the scales before it. With L = sum_k pn_k^2 tokens the
transformer's output at position j is the distribution of token j, so one forward pass per
(image, class) pair gives every per-token log-probability; the sum is log p(x | y) of the
token sequence, a normalised distribution over all V^L sequences for every class (and for the
null class ``NULL_CLASS``, the unconditional model). The block-causal mask makes the first
l_m = sum_{k<=m} pn_k^2 positions an exact prefix, so ``num_scales=m`` runs only those.

Shapes: B images, C candidate classes, P (image, class) pairs, L tokens, l <= L prefix tokens,
V codes, D width, Cv latent channels.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence, Union

import torch
from torch import Tensor, nn

from varc.atomic import atomic_write_bytes
from varc.config import VARConfig
from varc.heads import NULL_CLASS, ClassHeads
from varc.tokenizer import MultiScaleVQVAE
from varc.transformer import KVCache, LogitsAndCache, Trunk

Tokens = Union[Sequence[Tensor], Tensor]  # list of [B, pn, pn] maps, or the flat [B, L] sequence
Labels = Union[Tensor, Sequence[int], int]

CHECKPOINT_FORMAT = "varc-model/1"


class LogProbsAndCache(NamedTuple):
    """Per-token log-probs [P, l - l0] of P pairs and the pairs' cache of positions 0..l-1 (row p =
    pair p), to continue them later (``lp_Pl, cache = ...`` unpacks it)."""

    lp_Pl: Tensor
    cache: KVCache


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``"auto"`` -> CUDA where present, else CPU; ``cuda`` without a GPU is a ValueError (never
    a silent fall-back to the CPU); anything else as torch understands it."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(spec)!r} requested but no CUDA GPU is available; use auto or cpu")
    return device


class VARModel(nn.Module):
    """A class-conditional VAR with a shared trunk and per-class heads (see ``varc.heads``)."""

    def __init__(self, config: VARConfig, classes: Iterable[int] = (), *, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        self.config = config
        self.seed = seed
        self.patch_nums = config.patch_nums
        self.scale_ends = [sum(p * p for p in config.patch_nums[: k + 1]) for k in range(len(config.patch_nums))]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.tokenizer = MultiScaleVQVAE(config)
            self.trunk = Trunk(config)
        self.heads = ClassHeads(config.width, self.trunk.adapted_shapes(), config.head)
        self.add_classes([NULL_CLASS])
        self.add_classes(classes)
        self.to(resolve_device(config.device) if device is None else resolve_device(device))

    # =========================================================================================
    # Bookkeeping: classes, parameter sets, freezing
    # =========================================================================================
    @property
    def device(self) -> torch.device:
        return self.trunk.pos_1LD.device

    @property
    def classes(self) -> list[int]:
        """Ids of the classes that have parameters (ascending; the null class excluded)."""
        return self.heads.classes

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def seq_len(self) -> int:
        return self.scale_ends[-1]

    def prefix_len(self, num_scales: int | None = None) -> int:
        """Tokens in the first ``num_scales`` scales (all of them when None)."""
        if num_scales is None:
            return self.seq_len
        if not 1 <= num_scales <= self.num_scales:
            raise ValueError(f"num_scales must lie in 1..{self.num_scales}, got {num_scales}")
        return self.scale_ends[num_scales - 1]

    def _class_generator(self, c: int) -> torch.Generator:
        return torch.Generator().manual_seed(1_000_003 * self.seed + 7919 * (int(c) + 2))

    def add_classes(self, class_ids: Iterable[int], init: str = "random") -> list[int]:
        """Give parameters to classes seen for the first time; returns the ids that were new.

        Each new class's head is drawn from a generator seeded by (model seed, class id), so a
        class's initial parameters do not depend on when or beside which others it was added.
        ``init="null"`` starts it instead as a copy of the null class's head.
        """
        added = []
        for c in class_ids:
            added += self.heads.add([int(c)], init=init, generator=self._class_generator(int(c)))
        for c in added:
            self.heads.head(c).to(self.device)
        return added

    def class_parameters(self, class_ids: Iterable[int], include_null: bool = False) -> list[nn.Parameter]:
        """Exactly the parameters that belong to these classes (for an optimizer that holds only them)."""
        ids = list(class_ids) + ([NULL_CLASS] if include_null else [])
        return self.heads.parameters_of(ids)

    def trunk_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def tokenizer_parameters(self) -> list[nn.Parameter]:
        return list(self.tokenizer.parameters())

    def transformer_parameters(self) -> list[nn.Parameter]:
        """Trunk plus every head (null included): what joint transformer training updates."""
        return self.trunk_parameters() + self.class_parameters(self.classes, include_null=True)

    def freeze_trunk(self, frozen: bool = True) -> None:
        self.trunk.requires_grad_(not frozen)

    def freeze_tokenizer(self, frozen: bool = True) -> None:
        self.tokenizer.requires_grad_(not frozen)

    def freeze_classes(self, class_ids: Iterable[int], frozen: bool = True) -> None:
        for p in self.class_parameters(class_ids):
            p.requires_grad_(not frozen)

    # =========================================================================================
    # Images <-> tokens
    # =========================================================================================
    def encode(self, images: Tensor, noise_std: float = 0.0, generator: torch.Generator | None = None) -> list[Tensor]:
        """Token maps of float images in [0, 1] shaped [B, C, H, W]: one [B, pn, pn] LongTensor per scale.

        ``noise_std`` > 0 adds N(0, noise_std^2) to the encoder features before quantisation.
        """
        return self.tokenizer.encode(images.to(self.device, torch.float32), noise_std, generator)

    def decode(self, tokens: Tokens) -> Tensor:
        """Images [B, C, H, W] in [0, 1] from a full token list (or flat [B, L] sequence)."""
        return self.tokenizer.decode(self.split_tokens(tokens))

    def split_tokens(self, tokens: Tokens) -> list[Tensor]:
        """Flat [B, l] -> list of [B, pn, pn] maps (the first scales that l covers); lists pass through."""
        if isinstance(tokens, Tensor):
            if tokens.dim() != 2:
                raise ValueError(f"flat tokens must be [B, L], got shape {tuple(tokens.shape)}")
            out, start = [], 0
            for pn, end in zip(self.patch_nums, self.scale_ends):
                if end > tokens.shape[1]:
                    break
                out.append(tokens[:, start:end].reshape(-1, pn, pn))
                start = end
            return [t.to(self.device) for t in out]
        return [t.to(self.device) for t in tokens]

    @staticmethod
    def flatten_tokens(tokens: Sequence[Tensor]) -> Tensor:
        """List of [B, pn, pn] maps -> [B, sum pn^2] in scale order."""
        return torch.cat([t.flatten(1) for t in tokens], dim=1)

    # =========================================================================================
    # The transformer pass
    # =========================================================================================
    def _labels(self, labels: Labels, B: int) -> Tensor:
        y = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        if y.dim() == 0:
            y = y.expand(B)
        if y.shape != (B,):
            raise ValueError(f"labels must be one per image ({B}), got shape {tuple(y.shape)}")
        return y

    def _autocast(self) -> contextlib.AbstractContextManager:
        p, dev = self.config.precision, self.device.type
        if p == "bf16" or (p == "auto" and dev == "cuda"):
            return torch.autocast(device_type=dev, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward_logits(self, x_BlC: Tensor, labels_B: Tensor, *, past: KVCache | None = None) -> Tensor:
        """Logits [B, l, V] (fp32) from teacher-forcing inputs [B, l-1, Cv] and labels [B].

        A batch of one class runs with that class's weight deltas merged into the trunk's weights;
        a mixed batch uses per-sample LoRA products (``lora``) or one pass per class (``full``).
        ``past``, the cache of the first l0 positions of these same (image, class) sequences,
        limits the pass to positions l0..l-1 (logits [B, l - l0, V]).
        """
        return self._forward(x_BlC, labels_B, past, keep_kv=False)[0]

    def forward_logits_with_cache(self, x_BlC: Tensor, labels_B: Tensor, *,
                                  past: KVCache | None = None) -> LogitsAndCache:
        """:meth:`forward_logits` and the cache of all l positions of these sequences, to
        continue them later."""
        return LogitsAndCache(*self._forward(x_BlC, labels_B, past, keep_kv=True))

    def _forward(self, x_BlC: Tensor, labels_B: Tensor, past: KVCache | None,
                 keep_kv: bool) -> tuple[Tensor, KVCache | None]:
        """(logits, cache) of :meth:`forward_logits_with_cache`; the cache is None unless ``keep_kv``
        (so that a mixed ``full`` batch stacks its per-class caches only when they are wanted)."""
        with self._autocast():
            uniq = torch.unique(labels_B).tolist()
            if len(uniq) == 1:
                cond_BD = self.heads.head(uniq[0]).embedding.expand(len(labels_B), -1)
                logits_BlV, cache = self.trunk(x_BlC, cond_BD, self.heads.weight_deltas(uniq[0]) or None, past=past)
            elif self.heads.kind != "full":
                cond_BD, adapters = self.heads.condition(labels_B)
                logits_BlV, cache = self.trunk(x_BlC, cond_BD, adapters or None, past=past)
            else:
                rows_by_class = [(labels_B == c).nonzero()[:, 0] for c in uniq]
                parts = [self._forward(x_BlC[rows], labels_B[rows], past.select(rows) if past is not None else None,
                                       keep_kv)
                         for rows in rows_by_class]
                order = torch.argsort(torch.cat(rows_by_class))
                logits_BlV = torch.cat([p[0] for p in parts])[order]
                cache = KVCache.cat([p[1] for p in parts], order) if keep_kv else None
        return logits_BlV.float(), cache if keep_kv else None

    def logits(self, tokens: Tokens, labels: Labels, num_scales: int | None = None) -> Tensor:
        """Teacher-forced logits [B, l, V] of the first ``num_scales`` scales (l = prefix_len)."""
        toks = self.split_tokens(tokens)
        x_BlC = self.tokenizer.teacher_inputs(toks, num_scales or self.num_scales)
        return self.forward_logits(x_BlC, self._labels(labels, x_BlC.shape[0]))

    def token_log_probs(self, tokens: Tokens, labels: Labels, num_scales: int | None = None) -> Tensor:
        """log p(token_j | tokens of earlier scales, y) for j < l: [B, l]."""
        toks = self.split_tokens(tokens)
        l = self.prefix_len(num_scales)
        idx_Bl = self.flatten_tokens(toks)[:, :l]
        if idx_Bl.shape[1] < l:
            raise ValueError(f"tokens cover {idx_Bl.shape[1]} positions, {l} needed")
        return _gather_log_probs(self.logits(toks, labels, num_scales), idx_Bl)

    def log_likelihood(self, images: Tensor, labels: Labels, num_scales: int | None = None) -> Tensor:
        """log p(x | y) of each image's tokens, or of its first ``num_scales`` scales: [B]."""
        return self.token_log_probs(self.encode(images), labels, num_scales).sum(1)

    # =========================================================================================
    # Many classes per image (the classifier's hot path)
    # =========================================================================================
    def pair_token_log_probs(self, tokens: Tokens, image_idx: Tensor, labels: Labels,
                             num_scales: int | None = None, chunk_size: int = 1024, *,
                             past: KVCache | None = None) -> Tensor:
        """Per-token log-probs [P, l] of P (image, class) pairs: pair p is image ``image_idx[p]``
        of ``tokens`` under class ``labels[p]``.

        Teacher inputs are built once per image; pairs are grouped by class and the transformer
        runs on at most ``chunk_size`` pairs of one class at a time (that class's weights merged).
        ``past`` (row p = pair p's cache of its first l0 positions, e.g. ``cache.select(rows)`` of
        an earlier :meth:`pair_token_log_probs_with_cache`) limits the work to positions l0..l-1
        and the result to [P, l - l0].
        """
        return self._pair_pass(tokens, image_idx, labels, num_scales, chunk_size, past, keep_kv=False)[0]

    def pair_token_log_probs_with_cache(self, tokens: Tokens, image_idx: Tensor, labels: Labels,
                                        num_scales: int | None = None, chunk_size: int = 1024, *,
                                        past: KVCache | None = None) -> LogProbsAndCache:
        """:meth:`pair_token_log_probs` and the pairs' cache of all l positions (row p = pair p),
        to continue them later with ``past=cache.select(rows)``. Needs at least one pair."""
        return LogProbsAndCache(*self._pair_pass(tokens, image_idx, labels, num_scales, chunk_size, past,
                                                 keep_kv=True))

    def _pair_pass(self, tokens: Tokens, image_idx: Tensor, labels: Labels, num_scales: int | None,
                   chunk_size: int, past: KVCache | None, keep_kv: bool) -> tuple[Tensor, KVCache | None]:
        """(log-probs, cache) of :meth:`pair_token_log_probs_with_cache`; the cache is None unless
        ``keep_kv``."""
        toks = self.split_tokens(tokens)
        l = self.prefix_len(num_scales)
        l0 = past.length if past is not None else 0
        x_BlC = self.tokenizer.teacher_inputs(toks, num_scales or self.num_scales)
        idx_Bl = self.flatten_tokens(toks)[:, l0:l]
        image_idx = torch.as_tensor(image_idx, dtype=torch.long, device=self.device)
        labels_P = self._labels(labels, len(image_idx))
        if past is not None and len(past) != len(image_idx):
            raise ValueError(f"the cache holds {len(past)} pairs, {len(image_idx)} were given")
        order = torch.argsort(labels_P, stable=True)
        sorted_labels = labels_P[order]
        bounds = [0] + (torch.nonzero(sorted_labels[1:] != sorted_labels[:-1])[:, 0] + 1).tolist() + [len(order)]
        parts, caches, where = [], [], []
        for a, b in zip(bounds[:-1], bounds[1:]):
            for s in range(a, b, chunk_size):
                sel = order[s : min(b, s + chunk_size)]
                ii = image_idx[sel]
                logits_PlV, cache = self._forward(x_BlC[ii], labels_P[sel],
                                                  past.select(sel) if past is not None else None, keep_kv)
                parts.append(_gather_log_probs(logits_PlV, idx_Bl[ii]))
                caches.append(cache)
                where.append(sel)
        if not parts:
            if keep_kv:
                raise ValueError("a cache needs at least one pair")
            return x_BlC.new_zeros(0, l - l0), None
        back = torch.argsort(torch.cat(where))
        return torch.cat(parts)[back], KVCache.cat(caches, back) if keep_kv else None

    def class_token_log_probs(self, images_or_tokens: Tensor | Sequence[Tensor], classes: Sequence[int],
                              num_scales: int | None = None, chunk_size: int = 1024, *,
                              batch_size: int | None = None) -> Tensor:
        """Per-token log-probs [B, C, l] of every image under every class in ``classes``
        (``NULL_CLASS`` allowed). Images [B, C, H, W] are tokenised once; token lists pass through.

        ``batch_size``: tokenise and score that many images at a time (a whole test set at once
        would hold every image's teacher inputs); each batch's rows equal scoring it alone.
        """
        if batch_size is not None:
            return self._in_batches(images_or_tokens, classes, num_scales, chunk_size, batch_size)
        toks = self._as_tokens(images_or_tokens)
        B, C = toks[0].shape[0], len(classes)
        image_idx = torch.arange(B, device=self.device).repeat(C)  # class-major pairs
        labels_P = torch.as_tensor(list(classes), dtype=torch.long, device=self.device).repeat_interleave(B)
        lp_Pl = self.pair_token_log_probs(toks, image_idx, labels_P, num_scales, chunk_size)
        return lp_Pl.view(C, B, -1).transpose(0, 1)

    def _in_batches(self, images_or_tokens: Tensor | Sequence[Tensor], classes: Sequence[int],
                    num_scales: int | None, chunk_size: int, batch_size: int) -> Tensor:
        """:meth:`class_token_log_probs` of ``batch_size`` images at a time, concatenated: [B, C, l]."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        one_tensor = isinstance(images_or_tokens, Tensor)  # images, or flat [B, L] tokens
        n = len(images_or_tokens if one_tensor else images_or_tokens[0])
        if n == 0:
            return torch.zeros(0, len(classes), self.prefix_len(num_scales), device=self.device)
        return torch.cat([
            self.class_token_log_probs(images_or_tokens[s:s + batch_size] if one_tensor
                                       else [t[s:s + batch_size] for t in images_or_tokens],
                                       classes, num_scales, chunk_size)
            for s in range(0, n, batch_size)])

    def class_log_likelihoods(self, images_or_tokens: Tensor | Sequence[Tensor], classes: Sequence[int],
                              num_scales: int | None = None, chunk_size: int = 1024, *,
                              batch_size: int | None = None) -> Tensor:
        """log p(x | y = c) [B, C] for every image and every class in ``classes`` (``batch_size``:
        as in :meth:`class_token_log_probs`)."""
        return self.class_token_log_probs(images_or_tokens, classes, num_scales, chunk_size,
                                          batch_size=batch_size).sum(-1)

    def _as_tokens(self, images_or_tokens: Tensor | Sequence[Tensor]) -> list[Tensor]:
        if isinstance(images_or_tokens, Tensor) and images_or_tokens.dim() == 4:
            return self.encode(images_or_tokens)
        return self.split_tokens(images_or_tokens)

    # =========================================================================================
    # Sampling
    # =========================================================================================
    @torch.no_grad()
    def sample(self, labels: Labels, temperature: float = 1.0, top_k: int | None = None,
               cfg: float = 0.0, generator: torch.Generator | None = None, num_images: int | None = None) -> Tensor:
        """Class-conditional samples [B, C, H, W] in [0, 1], drawn scale by scale.

        ``cfg`` > 0 applies classifier-free guidance (logits (1+cfg) l_y - cfg l_null, Ho &
        Salimans 2022); ``top_k`` keeps the k most likely codes; ``generator`` makes it repeatable.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        B = num_images if num_images is not None else (1 if isinstance(labels, int) else len(labels))
        y_B = self._labels(labels, B)
        V, tok = self.config.vocab_size, self.tokenizer
        f_hat = None
        x_BlC = tok.codebook.weight.new_zeros(B, 0, self.config.latent_dim)
        for k, pn in enumerate(self.patch_nums):
            start = self.scale_ends[k] - pn * pn
            logits_BpV = self.forward_logits(x_BlC, y_B)[:, start:]
            if cfg:
                null_BpV = self.forward_logits(x_BlC, torch.full_like(y_B, NULL_CLASS))[:, start:]
                logits_BpV = (1 + cfg) * logits_BpV - cfg * null_BpV
            logits_BpV = logits_BpV / temperature
            if top_k is not None and top_k < V:
                kth = logits_BpV.topk(top_k, dim=-1).values[..., -1:]
                logits_BpV = logits_BpV.masked_fill(logits_BpV < kth, float("-inf"))
            probs_NV = logits_BpV.softmax(-1).reshape(-1, V)
            idx_Bpp = torch.multinomial(probs_NV.cpu(), 1, generator=generator).view(B, pn, pn).to(self.device)
            f_hat = tok.add_scale(f_hat, k, idx_Bpp)
            if k + 1 < self.num_scales:
                x_BlC = torch.cat([x_BlC, tok.next_scale_input(f_hat, k)], 1)
        return tok.decode_f(f_hat)

    # =========================================================================================
    # Checkpoints
    # =========================================================================================
    def save(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        """:meth:`to_bytes`, written atomically (a full disk fails as an OSError)."""
        atomic_write_bytes(path, self.to_bytes(extra))

    def to_bytes(self, extra: dict | None = None) -> bytes:
        """``torch.save`` of {format, config, classes, seed, state_dict, extra}: the file :meth:`load` reads."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "classes": self.classes,
            "seed": self.seed,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": extra or {},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "VARModel":
        """Rebuild a model saved by :meth:`save` (``weights_only=True``: no code is unpickled)."""
        try:
            payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
            raise ValueError(f"{path} is not a VAR model checkpoint ({CHECKPOINT_FORMAT}), or it is damaged "
                             f"({type(exc).__name__})") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a VAR model checkpoint ({CHECKPOINT_FORMAT})")
        config = VARConfig.from_dict(payload["config"])
        model = cls(config, payload["classes"], seed=payload["seed"], device="cpu")
        model.load_state_dict(payload["state_dict"])
        model.checkpoint_extra = payload.get("extra", {})
        return model.to(resolve_device(config.device) if device is None else resolve_device(device))


def _gather_log_probs(logits_BlV: Tensor, idx_Bl: Tensor) -> Tensor:
    """log softmax(logits)[idx] without materialising the full log-softmax."""
    return logits_BlV.gather(-1, idx_Bl[..., None])[..., 0] - logits_BlV.logsumexp(-1)
