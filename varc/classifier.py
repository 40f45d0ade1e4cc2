"""VARC and A-VARC+ scoring: a class-conditional VAR used as a generative classifier.

VARC (Chen, Inouye, Gao 2025, "Your VAR Model is Secretly an Efficient and Explainable
Generative Classifier"): score[b, y] = log p(x_b | y) + log p(y) for every candidate class,
predict the argmax. Two of A-VARC+'s inference parts live here (the third, condition-
contrastive fine-tuning, changes the model and lives in ``varc.cca``):

- **partial-scale candidate pruning**: a schedule of stages ``((m_1, k_1), ..., (None, 1))``.
  Stage s scores each image's surviving candidates on the first m_s scales (an exact prefix
  of the likelihood, thanks to the block-causal mask) and keeps the k_s best; the last stage
  uses every scale. Each stage continues its survivors from the keys and values cached by the
  stage before, so a candidate pays only for the scales it has not been scored on yet; once an
  image has a single candidate left it is decided and costs nothing more.
- **likelihood smoothing**: average log p(x | y) over S tokenisations of the image, the clean
  one and S-1 with Gaussian noise of std sigma added to the encoder features before
  quantisation.

Cost is counted in *token-forwards*: transformer positions processed, summed over the
(image, class, tokenisation) triples scored. Plain VARC costs C * L per image; a schedule
((m_1, k_1), (None, 1)) costs C * l_{m_1} + k_1 * (L - l_{m_1}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from varc.model import VARModel
from varc.transformer import KVCache

Stage = tuple[int | None, int]  # (number of scales, or None for all; candidates kept)


def parse_schedule(stages: Sequence[Sequence[int | str | None]] | None, num_scales: int) -> tuple[Stage, ...]:
    """``[[4, 3], ["full", 1]]`` -> ((4, 3), (None, 1)); validated against the model's scales.

    An empty schedule means plain VARC (one full stage). A schedule whose last stage is not
    full gets a final full stage appended, so predictions always use the whole likelihood.
    """
    out: list[Stage] = []
    for i, stage in enumerate(stages or ()):
        if not isinstance(stage, (list, tuple)) or len(stage) != 2:
            raise ValueError(f"prune stage {i}: expected [num_scales | 'full', keep], got {stage!r}")
        m, keep = stage
        if m in ("full", None) or m == num_scales:
            m = None
        elif not isinstance(m, int) or not 1 <= m < num_scales:
            raise ValueError(f"prune stage {i}: num_scales must be 1..{num_scales - 1} or 'full', got {m!r}")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"prune stage {i}: keep must be a positive integer, got {keep!r}")
        if out and out[-1][0] is None:
            raise ValueError(f"prune stage {i}: nothing may follow a full-scale stage")
        if out and m is not None and out[-1][0] is not None and m <= out[-1][0]:
            raise ValueError(f"prune stages must use more scales each time, got {out[-1][0]} then {m}")
        out.append((m, keep))
    if not out or out[-1][0] is not None:
        out.append((None, 1))
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """How to score candidates: pruning schedule and likelihood smoothing (both off = VARC)."""

    prune: tuple[Stage, ...] = ()
    smooth_samples: int = 1
    smooth_std: float = 0.0
    chunk_size: int = 2048

    def __post_init__(self) -> None:
        if self.smooth_samples < 1:
            raise ValueError(f"smooth_samples must be >= 1, got {self.smooth_samples}")
        if self.smooth_std < 0:
            raise ValueError(f"smooth_std must be >= 0, got {self.smooth_std}")
        if self.smooth_samples > 1 and self.smooth_std == 0:
            raise ValueError("smoothing with smooth_samples > 1 needs smooth_std > 0 (else every sample is the same)")

    @property
    def name(self) -> str:
        parts = []
        stages = [s for s in self.prune if s[0] is not None]
        if stages:
            parts.append("prune[" + ",".join(f"{m}:{k}" for m, k in stages) + "]")
        if self.smooth_samples > 1:
            parts.append(f"smooth[S={self.smooth_samples},sigma={self.smooth_std:g}]")
        return "+".join(parts) or "varc"


@dataclass
class Scores:
    """Scores [B, C] and their cost: log p(x | y) + log p(y) over the scales a candidate was scored
    on (all of them, unless an image was decided early with one candidate left), -inf for
    candidates pruned on the way."""

    scores_BC: Tensor
    token_forwards: int
    stage_candidates: list[int] = field(default_factory=list)  # (image, class) pairs scored per stage

    def predict(self, classes: Sequence[int]) -> Tensor:
        return torch.as_tensor(list(classes), device=self.scores_BC.device)[self.scores_BC.argmax(1)]


def log_prior(classes: Sequence[int], counts: dict[int, int] | None = None) -> Tensor:
    """log p(y) over ``classes``: uniform, or proportional to ``counts`` (training frequencies)."""
    if counts is None:
        return torch.full((len(classes),), -math.log(len(classes)))
    n = torch.tensor([float(counts.get(int(c), 0)) for c in classes])
    if (n <= 0).any():
        missing = [int(c) for c, k in zip(classes, n) if k <= 0]
        raise ValueError(f"frequency prior: no training count for classes {missing}")
    return (n / n.sum()).log()


@torch.no_grad()
def score(model: VARModel, images: Tensor, classes: Sequence[int], config: ScoringConfig = ScoringConfig(),
          *, log_prior_C: Tensor | None = None, generator: torch.Generator | None = None) -> Scores:
    """Score every image against every class in ``classes`` as ``config`` says."""
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("score: no candidate classes")
    stages = parse_schedule(config.prune, model.num_scales) if config.prune else ((None, 1),)
    B, C = images.shape[0], len(classes)
    device = model.device
    prior_C = (log_prior_C if log_prior_C is not None else torch.zeros(C)).to(device, torch.float32)
    labels_C = torch.tensor(classes, device=device)

    toks = [model.encode(images)]
    for _ in range(config.smooth_samples - 1):
        toks.append(model.encode(images, noise_std=config.smooth_std, generator=generator))

    alive_BC = torch.ones(B, C, dtype=torch.bool, device=device)
    ll_BC = torch.zeros(B, C, device=device)  # log-likelihood of the scales scored so far
    row_BC = torch.full((B, C), -1, dtype=torch.long, device=device)  # pair's row in the caches
    caches: list[KVCache | None] = [None] * len(toks)
    done_l, forwards, per_stage = 0, 0, []
    for s, (m, keep) in enumerate(stages):
        n_alive = int(alive_BC.sum(1).max())
        if s > 0 and n_alive <= 1:
            break  # every image has one candidate left: the prediction is made
        last = s == len(stages) - 1
        if not last and keep >= n_alive:
            continue  # a stage that would prune nothing is skipped (its scales are scored later)
        b_P, c_P = alive_BC.nonzero(as_tuple=True)
        rows_P = row_BC[b_P, c_P]
        ll_P = torch.zeros(len(b_P), device=device)
        for i, t in enumerate(toks):
            past = caches[i].select(rows_P) if caches[i] is not None else None
            out = model.pair_token_log_probs(t, b_P, labels_C[c_P], num_scales=m, chunk_size=config.chunk_size,
                                             past=past, keep_kv=not last)
            lp_Pl, caches[i] = out if not last else (out, None)
            ll_P += lp_Pl.sum(1)
        l = model.prefix_len(m)
        forwards += len(b_P) * (l - done_l) * len(toks)
        per_stage.append(len(b_P))
        done_l = l
        ll_BC[b_P, c_P] += ll_P / len(toks)
        row_BC[b_P, c_P] = torch.arange(len(b_P), device=device)
        scores_BC = torch.full((B, C), float("-inf"), device=device)
        scores_BC[b_P, c_P] = ll_BC[b_P, c_P] + prior_C[c_P]
        if not last:
            top_Bk = scores_BC.topk(min(keep, C), dim=1).indices
            alive_BC = torch.zeros_like(alive_BC).scatter_(1, top_Bk, True) & alive_BC
            scores_BC = scores_BC.masked_fill(~alive_BC, float("-inf"))
    return Scores(scores_BC=scores_BC, token_forwards=forwards, stage_candidates=per_stage)
