"""Condition-contrastive fine-tuning (CCA) of class heads, the "+" of A-VARC+.

CCA (Chen et al. 2024, "Toward Guidance-Free AR Visual Generation via Condition Contrastive
Alignment"; used for classification by Chen, Inouye, Gao 2025) sharpens the class-conditional
likelihood with a logistic loss on the log-likelihood ratio against a frozen reference model
(the model before this step):

    loss = -log sigma(beta * (l_theta(x, y) - l_ref(x, y)))
           - lambda * log sigma(-beta * (l_theta(x, y_neg) - l_ref(x, y_neg)))

with l = log p(x | y) summed over tokens and y_neg another class. Negatives are drawn from a
given pool (in class-incremental learning, the classes of the current experience), so the
heads of earlier classes are neither used nor moved.

``negatives`` adds images of other classes that only ever serve as negatives: each batch also
pushes a pool class's likelihood down on as many of them, drawn at random, paired with a pool
class at random, with the same weight lambda. In class-incremental learning without stored
images they can be images sampled from the earlier classes' own heads (generative replay of
negatives, after Shin et al. 2017), so that a new head also learns what the old classes look
like, which the experience's own images cannot show it.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varc.model import VARModel


def cca_finetune(model: VARModel, tokens: list[Tensor], labels: Tensor, *, params: Sequence[nn.Parameter],
                 negative_pool: Sequence[int], epochs: int = 1, lr: float = 1e-4, beta: float = 0.02,
                 lam: float = 1.0, batch_size: int = 64, seed: int = 0, negatives: list[Tensor] | None = None,
                 progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Fine-tune ``params`` with the CCA loss; the reference is the model as it is on entry.
    ``negatives``: token maps of extra negative images (see the module docstring), or None."""
    pool = [int(c) for c in negative_pool]
    if len(pool) < 2:
        raise ValueError(f"CCA needs at least two classes to draw negatives from, got {pool}")
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    col = {c: i for i, c in enumerate(pool)}
    if not set(labels.tolist()) <= set(pool):
        raise ValueError("every label must be in the negative pool (the classes being fine-tuned)")
    if negatives is not None and len(negatives[0]) == 0:
        raise ValueError("negatives holds no image; pass None for none")
    with torch.no_grad():  # the frozen reference: log p(x | c) of the model as it is on entry
        ref_NC = model.class_log_likelihoods(tokens, pool, batch_size=512).cpu()
        ref_MC = model.class_log_likelihoods(negatives, pool, batch_size=512).cpu() if negatives is not None else None
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    n, history = len(labels), []
    ids = set(id(p) for p in params)
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(id(p) in ids)
    try:
        for epoch in range(epochs):
            t0, total, acc_sum = time.perf_counter(), 0.0, 0.0
            perm = torch.randperm(n, generator=g)
            for s in range(0, n, batch_size):
                idx = perm[s:s + batch_size]
                y = labels[idx]
                # a negative class != y, uniformly from the pool
                shift = torch.randint(1, len(pool), (len(idx),), generator=g)
                yi = torch.tensor([col[int(c)] for c in y])
                neg_i = (yi + shift) % len(pool)
                y_neg = torch.tensor(pool)[neg_i]
                tok_b = [t[idx].to(model.device) for t in tokens]
                both_y = torch.cat([y, y_neg]).to(model.device)
                image_idx = torch.arange(len(idx), device=model.device).repeat(2)
                ll_P = model.pair_token_log_probs(tok_b, image_idx, both_y).sum(1)
                ref_P = torch.cat([ref_NC[idx, yi], ref_NC[idx, neg_i]]).to(ll_P.device)
                ratio_pos, ratio_neg = (beta * (ll_P - ref_P)).chunk(2)
                loss = -F.logsigmoid(ratio_pos).mean() - lam * F.logsigmoid(-ratio_neg).mean()
                if ref_MC is not None:  # as many extra negatives, each under a random pool class
                    j = torch.randint(len(ref_MC), (len(idx),), generator=g)
                    cj = torch.randint(len(pool), (len(idx),), generator=g)
                    ll_M = model.pair_token_log_probs([t[j].to(model.device) for t in negatives],
                                                      torch.arange(len(j), device=model.device),
                                                      torch.tensor(pool)[cj].to(model.device)).sum(1)
                    ratio_extra = beta * (ll_M - ref_MC[j, cj].to(ll_M.device))
                    loss = loss - lam * F.logsigmoid(-ratio_extra).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                acc_sum += (ll_P[: len(idx)] > ll_P[len(idx):]).float().sum().item()
            rec = {"epoch": epoch + 1, "epochs": epochs, "loss": total / n, "pair_accuracy": acc_sum / n,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if progress:
                progress(rec)
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    if not all(math.isfinite(r["loss"]) for r in history):
        raise FloatingPointError("CCA loss became non-finite; lower cca_lr or cca_beta")
    return history
