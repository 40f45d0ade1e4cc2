"""VARC and A-VARC+ scoring: a class-conditional VAR used as a generative classifier.

VARC (Chen, Inouye, Gao 2025, "Your VAR Model is Secretly an Efficient and Explainable
Generative Classifier"): score[b, y] = log p(x_b | y) + log p(y) for every candidate class,
predict the argmax. Two of A-VARC+'s inference parts live here (the third, condition-
contrastive fine-tuning, changes the model and lives in ``varc.cca``):

- **partial-scale candidate pruning**: a schedule of stages ``((m_1, k_1), ..., (None, 1))``.
  Stage s scores each image's surviving candidates on the first m_s scales (an exact prefix
  of the likelihood, thanks to the block-causal mask) and keeps the k_s best; the last stage
  uses every scale. A stage may also carry a margin d_s in nats, ``(m_s, k_s, d_s)``: it then
  keeps, of those k_s, only the candidates within d_s of the image's best prefix score, so an
  image whose class is already clear drops its other candidates early and an ambiguous one
  keeps more (our extension of the fixed top-k schedule). Each stage continues its survivors
  from the keys and values cached by the stage before, so a candidate pays only for the scales
  it has not been scored on yet; an image with a single candidate left is decided there and
  costs nothing more.
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

from varc.memo import ScoreMemo, digests
from varc.model import VARModel
from varc.transformer import KVCache

# (number of scales, or None for all; candidates kept at most; margin in nats, or None)
Stage = tuple[int | None, int, float | None]


def parse_schedule(stages: Sequence[Sequence[int | float | str | None]] | None, num_scales: int
                   ) -> tuple[Stage, ...]:
    """``[[3, 7, 12], [4, 3], ["full", 1]]`` -> ((3, 7, 12.0), (4, 3, None), (None, 1, None)),
    validated against the model's scales.

    An empty schedule means plain VARC (one full stage). A schedule whose last stage is not
    full gets a final full stage appended, so predictions always use the whole likelihood.
    """
    out: list[Stage] = []
    for i, stage in enumerate(stages or ()):
        if not isinstance(stage, (list, tuple)) or len(stage) not in (2, 3):
            raise ValueError(f"prune stage {i}: expected [num_scales | 'full', keep] or "
                             f"[num_scales, keep, margin_nats], got {stage!r}")
        m, keep, margin = (*stage, None) if len(stage) == 2 else stage
        if m in ("full", None) or m == num_scales:
            m = None
        elif not isinstance(m, int) or not 1 <= m < num_scales:
            raise ValueError(f"prune stage {i}: num_scales must be 1..{num_scales - 1} or 'full', got {m!r}")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"prune stage {i}: keep must be a positive integer, got {keep!r}")
        if margin is not None:
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
                raise ValueError(f"prune stage {i}: the margin is a number of nats >= 0, got {margin!r}")
            if m is None:
                raise ValueError(f"prune stage {i}: the full-scale stage decides; it takes no margin")
            margin = float(margin)
        if out and out[-1][0] is None:
            raise ValueError(f"prune stage {i}: nothing may follow a full-scale stage")
        if out and m is not None and out[-1][0] is not None and m <= out[-1][0]:
            raise ValueError(f"prune stages must use more scales each time, got {out[-1][0]} then {m}")
        out.append((m, keep, margin))
    if not out or out[-1][0] is not None:
        out.append((None, 1, None))
    return tuple(out)


def stage_text(stage: Stage) -> str:
    """(3, 7, 12.0) -> '3:7@12' (keep at most 7 after 3 scales, within 12 nats of the best)."""
    m, keep, margin = stage
    return f"{m}:{keep}" + (f"@{margin:g}" if margin is not None else "")


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
    def plain(self) -> bool:
        """VARC's scoring: every candidate on every scale of the one clean tokenisation."""
        return not self.prune and self.smooth_samples == 1

    @property
    def name(self) -> str:
        parts = []
        stages = [s for s in self.prune if s[0] is not None]
        if stages:
            parts.append("prune[" + ",".join(stage_text(tuple(s) + (None,) * (3 - len(s))) for s in stages) + "]")
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


def _remembered_prefix(model: VARModel, table_BNS: Tensor, tokens: list[Tensor], b_P: Tensor, c_P: Tensor,
                       m: int | None, first: int, chunk_size: int) -> tuple[Tensor, int]:
    """(log-likelihood [P] of scales first..m-1 of each (image, class) pair, token-forwards
    spent). ``table_BNS`` holds remembered per-scale log-likelihoods (NaN: not scored): they are
    read back; a pair missing any of the first m scales is scored on all of them, from scratch,
    and the scales it missed are filled in, in place."""
    n = m or model.num_scales
    part_PS = table_BNS[b_P, c_P, :n]
    miss_P = part_PS.isnan().any(1)
    spent = 0
    if miss_P.any():
        lp_Ql = model.pair_token_log_probs(tokens, b_P[miss_P], c_P[miss_P], m, chunk_size)
        spent = lp_Ql.numel()
        new_QS = torch.stack([lp_Ql[:, a:e].sum(1) for a, e in
                              zip([0] + model.scale_ends[: n - 1], model.scale_ends[:n])], dim=1)
        old_QS = part_PS[miss_P]  # scales an earlier stage read keep their bits, as that stage ranked on them
        part_PS[miss_P] = torch.where(old_QS.isnan(), new_QS, old_QS)
        table_BNS[b_P, c_P, :n] = part_PS
    return part_PS[:, first:].sum(1), spent


@torch.no_grad()
def score(model: VARModel, images: Tensor, classes: Sequence[int], config: ScoringConfig = ScoringConfig(),
          *, log_prior_C: Tensor | None = None, generator: torch.Generator | None = None,
          memo: ScoreMemo | None = None) -> Scores:
    """Score every image against every class in ``classes`` as ``config`` says.

    ``memo``, for a model whose scored classes do not change between calls: a
    ``ScoreMemo(n_classes, width=num_scales)`` of per-scale log-likelihoods keyed by
    tokenisation, so a pair scored once (on as many scales as a stage needed) is read back, not
    scored again. Predictions are the same; a remembered score may differ from a fresh one in
    the last bits (its scales are summed one by one). ``token_forwards`` then counts only the
    positions scored in this call.
    """
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("score: no candidate classes")
    stages = parse_schedule(config.prune, model.num_scales) if config.prune else ((None, 1, None),)
    B, C = images.shape[0], len(classes)
    if B == 0:
        return Scores(scores_BC=torch.zeros(0, C, device=model.device), token_forwards=0)
    device = model.device
    prior_C = (log_prior_C if log_prior_C is not None else torch.zeros(C)).to(device, torch.float32)
    labels_C = torch.tensor(classes, device=device)

    toks = [model.encode(images)]
    for _ in range(config.smooth_samples - 1):
        toks.append(model.encode(images, noise_std=config.smooth_std, generator=generator))

    if memo is not None and (memo.width != model.num_scales or memo.n_classes <= max(classes)):
        raise ValueError(f"score: a memo of {memo.n_classes} classes x {memo.width} scales does not fit a model of "
                         f"{model.num_scales} scales scoring classes up to {max(classes)}")
    keys = [digests(model.flatten_tokens(t)) for t in toks] if memo is not None else []
    tables = [memo.table(k).to(device) for k in keys]  # [B, n_classes, num_scales] per tokenisation
    first_scale = 0  # the first scale a stage scores (stages before it scored the rest)

    alive_BC = torch.ones(B, C, dtype=torch.bool, device=device)
    decided_B = torch.zeros(B, dtype=torch.bool, device=device)  # one candidate left: nothing more to score
    ll_BC = torch.zeros(B, C, device=device)  # log-likelihood of the scales scored so far
    scores_BC = torch.full((B, C), float("-inf"), device=device)
    row_BC = torch.full((B, C), -1, dtype=torch.long, device=device)  # pair's row in the caches
    caches: list[KVCache | None] = [None] * len(toks)
    done_l, forwards, per_stage = 0, 0, []
    for s, (m, keep, margin) in enumerate(stages):
        active_BC = alive_BC & ~decided_B[:, None]
        n_active = int(active_BC.sum(1).max())
        if n_active == 0:
            break  # every image is decided
        last = s == len(stages) - 1
        if not last and margin is None and keep >= n_active:
            continue  # a stage that would prune nothing is skipped (its scales are scored later)
        b_P, c_P = active_BC.nonzero(as_tuple=True)
        rows_P = row_BC[b_P, c_P]
        ll_P = torch.zeros(len(b_P), device=device)
        l = model.prefix_len(m)
        for i, t in enumerate(toks):
            if memo is not None:
                ll, spent = _remembered_prefix(model, tables[i], t, b_P, labels_C[c_P], m, first_scale,
                                               config.chunk_size)
                ll_P += ll
                forwards += spent
                continue
            past = caches[i].select(rows_P) if caches[i] is not None else None
            pairs = (t, b_P, labels_C[c_P], m, config.chunk_size)
            if last:  # nothing continues the last stage: no cache to keep
                lp_Pl, caches[i] = model.pair_token_log_probs(*pairs, past=past), None
            else:
                lp_Pl, caches[i] = model.pair_token_log_probs_with_cache(*pairs, past=past)
            ll_P += lp_Pl.sum(1)
        if memo is None:
            forwards += len(b_P) * (l - done_l) * len(toks)
        per_stage.append(len(b_P))
        done_l, first_scale = l, m or model.num_scales
        ll_BC[b_P, c_P] += ll_P / len(toks)
        row_BC[b_P, c_P] = torch.arange(len(b_P), device=device)
        scores_BC[b_P, c_P] = ll_BC[b_P, c_P] + prior_C[c_P]
        if not last:
            ranked_BC = scores_BC.masked_fill(~active_BC, float("-inf"))
            keep_BC = torch.zeros_like(alive_BC).scatter_(1, ranked_BC.topk(min(keep, C), dim=1).indices, True)
            if margin is not None:
                keep_BC &= ranked_BC >= ranked_BC.max(1, keepdim=True).values - margin
            alive_BC &= keep_BC | decided_B[:, None]
            scores_BC = scores_BC.masked_fill(~alive_BC, float("-inf"))
            decided_B = alive_BC.sum(1) == 1
    for k, table_BNS in zip(keys, tables):
        memo.remember(k, table_BNS)
    return Scores(scores_BC=scores_BC, token_forwards=forwards, stage_candidates=per_stage)
