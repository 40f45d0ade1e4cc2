"""Explanations from the VAR classifier: token-wise mutual information maps.

A VAR classifier scores a class by a sum over tokens, log p(x | y) = sum_t log p(r_t | r_<k(t), y),
so each token's share of the evidence can be read off the per-token log-probabilities the
classifier computes anyway -- no gradients, no surrogate model (Chen, Inouye, Gao 2025, "Your
VAR Model is Secretly an Efficient and Explainable Generative Classifier", token-wise mutual
information).

**Token-wise mutual information.** For token t of scale k,

    TMI_t(x, y) = log p(r_t | r_<k, y) - log p(r_t | r_<k),

with the marginal either

- ``"bayes"`` (exact under the classifier's own model): p(r_t | r_<k) = sum_y' p(y' | r_<k)
  p(r_t | r_<k, y'), where p(y' | r_<k) is proportional to p(y') p(r_<k | y'). All tokens of
  scale k share the prefix r_<k, so the class weights are one set per scale, obtained from
  the per-token log-probabilities by cumulative sums at the scale boundaries; or
- ``"null"``: the null-class (unconditional) model p(r_t | r_<k, y = NULL_CLASS), one extra
  pass per image.

The contrastive map "why y and not y'" is log p(r_t | r_<k, y) - log p(r_t | r_<k, y'); its sum
over tokens is log p(x | y) - log p(x | y').

**Pixel maps.** Scale k's pn x pn grid covers the image; a token's value is spread evenly over
its cell (cells are image-sized / pn, fractional pixels counted by overlap), i.e. weighted by
the token's share 1 / pn^2 of the latent area. So each scale's pixel map sums to the sum of
that scale's token values and the full map to the image's summed token values.

**Straight-through likelihoods.** :func:`straight_through_log_likelihoods` gives log p(x | y)
with a gradient to the pixels, from which the VAR classifier's own gradient saliency is taken.
How faithful maps are (insertion/deletion curves, AUC, baseline maps of any classifier) is not
this library's business: it is measured by the code that compares the maps.

Shapes: B images, C classes, L tokens, K scales, H x W pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from varc.heads import NULL_CLASS
from varc.model import VARModel

MARGINALS = ("bayes", "null")


# =============================================================================================
# Token-wise mutual information
# =============================================================================================
def token_scales(scale_ends: Sequence[int]) -> Tensor:
    """Scale index of every token position: [L] (scale_ends as in ``VARModel.scale_ends``)."""
    starts = [0, *scale_ends[:-1]]
    return torch.cat([torch.full((e - s,), k, dtype=torch.long) for k, (s, e) in enumerate(zip(starts, scale_ends))])


def _check_lp(lp_BCL: Tensor, scale_ends: Sequence[int]) -> None:
    if lp_BCL.dim() != 3:
        raise ValueError(f"per-token log-probs must be [B, C, L], got shape {tuple(lp_BCL.shape)}")
    if lp_BCL.shape[-1] != scale_ends[-1]:
        raise ValueError(f"per-token log-probs cover {lp_BCL.shape[-1]} tokens, the scales {scale_ends[-1]}")


def log_prior(log_prior_C: Tensor | None, C: int, like: Tensor) -> Tensor:
    """The class log-prior [C] in ``like``'s dtype and device: ``log_prior_C`` checked, or uniform if None."""
    if log_prior_C is None:
        return torch.full((C,), -math.log(C), dtype=like.dtype, device=like.device)
    log_prior_C = torch.as_tensor(log_prior_C, dtype=like.dtype, device=like.device)
    if log_prior_C.shape != (C,):
        raise ValueError(f"log_prior_C must have one entry per class ({C}), got shape {tuple(log_prior_C.shape)}")
    return log_prior_C


def scale_log_likelihoods(lp_BCL: Tensor, scale_ends: Sequence[int]) -> Tensor:
    """log p(r_k | r_<k, y) per scale: [B, C, K] (sums of the per-token log-probs of each scale)."""
    _check_lp(lp_BCL, scale_ends)
    starts = [0, *scale_ends[:-1]]
    return torch.stack([lp_BCL[..., s:e].sum(-1) for s, e in zip(starts, scale_ends)], dim=-1)


def prefix_log_posterior(lp_BCL: Tensor, scale_ends: Sequence[int], log_prior_C: Tensor | None = None) -> Tensor:
    """log p(y | r_<k) for every class and scale: [B, C, K].

    p(y | r_<k) is proportional to p(y) p(r_<k | y); at the first scale (empty prefix) it is
    the prior (uniform when ``log_prior_C`` is None).
    """
    seg_BCK = scale_log_likelihoods(lp_BCL, scale_ends)
    prefix_BCK = seg_BCK.cumsum(-1) - seg_BCK  # scales strictly before k
    joint_BCK = log_prior(log_prior_C, lp_BCL.shape[1], lp_BCL)[None, :, None] + prefix_BCK
    return joint_BCK - joint_BCK.logsumexp(1, keepdim=True)


def bayes_marginal(lp_BCL: Tensor, scale_ends: Sequence[int], log_prior_C: Tensor | None = None) -> Tensor:
    """log p(r_t | r_<k) = logsumexp_y' [log p(y' | r_<k) + log p(r_t | r_<k, y')]: [B, L]."""
    post_BCK = prefix_log_posterior(lp_BCL, scale_ends, log_prior_C)
    post_BCL = post_BCK[..., token_scales(scale_ends).to(lp_BCL.device)]
    return (post_BCL + lp_BCL).logsumexp(1)


def contrast(lp_BCL: Tensor, a_B: Tensor, b_B: Tensor) -> Tensor:
    """log p(r_t | r_<k, a) - log p(r_t | r_<k, b) per image, classes given as indices into C: [B, L]."""
    rows = torch.arange(lp_BCL.shape[0], device=lp_BCL.device)
    a_B, b_B = torch.as_tensor(a_B, device=lp_BCL.device), torch.as_tensor(b_B, device=lp_BCL.device)
    return lp_BCL[rows, a_B] - lp_BCL[rows, b_B]


@dataclass
class TokenExplanation:
    """Per-token log-probabilities of a batch under every candidate class, and what follows from them.

    ``classes[i]`` is the class id of index i along dim C; predictions and runner-ups are such
    indices. Log-probabilities are held in float64 so that sums over many tokens stay exact.
    """

    classes: list[int]
    token_log_probs_BCL: Tensor
    log_marginal_BL: Tensor
    log_prior_C: Tensor
    scale_ends: list[int]
    marginal: str

    @property
    def log_likelihood_BC(self) -> Tensor:
        """log p(x | y)."""
        return self.token_log_probs_BCL.sum(-1)

    @property
    def log_posterior_BC(self) -> Tensor:
        """log p(y | x) = log softmax_y (log p(x | y) + log p(y)): the classifier's posterior."""
        return torch.log_softmax(self.log_likelihood_BC + self.log_prior_C, dim=1)

    @property
    def predicted(self) -> Tensor:
        """Index (into ``classes``) of the most probable class: [B]."""
        return self.log_posterior_BC.argmax(1)

    @property
    def runner_up(self) -> Tensor:
        """Index of the second most probable class: [B] (needs at least two classes)."""
        if len(self.classes) < 2:
            raise ValueError("a runner-up needs at least two candidate classes")
        return self.log_posterior_BC.topk(2, dim=1).indices[:, 1]

    @property
    def tmi_BCL(self) -> Tensor:
        """TMI_t(x, y) for every class: [B, C, L]."""
        return self.token_log_probs_BCL - self.log_marginal_BL[:, None]

    def tmi(self, class_idx_B: Tensor | None = None) -> Tensor:
        """TMI of each image's own class (default: the predicted one), indices into ``classes``: [B, L]."""
        idx = self.predicted if class_idx_B is None else torch.as_tensor(class_idx_B, device=self.tmi_BCL.device)
        return self.tmi_BCL[torch.arange(len(idx), device=idx.device), idx]

    def contrast(self, a_B: Tensor | None = None, b_B: Tensor | None = None) -> Tensor:
        """"Why a and not b" per token (default: predicted vs runner-up): [B, L]."""
        a_B = self.predicted if a_B is None else a_B
        b_B = self.runner_up if b_B is None else b_B
        return contrast(self.token_log_probs_BCL, a_B, b_B)


@torch.no_grad()
def explain_tokens(model: VARModel, images_or_tokens: Tensor | Sequence[Tensor], classes: Sequence[int] | None = None,
                   *, marginal: str = "bayes", log_prior_C: Tensor | None = None,
                   chunk_size: int = 1024) -> TokenExplanation:
    """Per-token log-probs of every image under every class, and the TMI marginal.

    ``classes`` defaults to the model's classes; ``marginal`` is ``"bayes"`` (exact mixture over
    ``classes`` with the prior ``log_prior_C``, uniform by default) or ``"null"`` (the
    null-class model, one extra pass).
    """
    if marginal not in MARGINALS:
        raise ValueError(f"marginal {marginal!r}: use one of {', '.join(MARGINALS)}")
    classes = [int(c) for c in (model.classes if classes is None else classes)]
    if not classes:
        raise ValueError("explain_tokens: no candidate classes")
    if NULL_CLASS in classes:
        raise ValueError("the null class cannot be a candidate class; use marginal='null' for it")
    if isinstance(images_or_tokens, Tensor) and images_or_tokens.dim() == 4:
        toks = model.encode(images_or_tokens)
    else:
        toks = model.split_tokens(images_or_tokens)
    lp_BCL = model.class_token_log_probs(toks, classes, chunk_size=chunk_size).double()
    prior_C = log_prior(log_prior_C, len(classes), lp_BCL)
    if marginal == "bayes":
        log_marg_BL = bayes_marginal(lp_BCL, model.scale_ends, prior_C)
    else:
        log_marg_BL = model.class_token_log_probs(toks, [NULL_CLASS], chunk_size=chunk_size).double()[:, 0]
    return TokenExplanation(classes=classes, token_log_probs_BCL=lp_BCL, log_marginal_BL=log_marg_BL,
                            log_prior_C=prior_C, scale_ends=list(model.scale_ends), marginal=marginal)


# =============================================================================================
# Pixel maps
# =============================================================================================
def cell_weights(n_cells: int, size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """[size, n_cells]: overlap of pixel i with cell j (cells of length size / n_cells), per unit of cell length.

    Every column sums to 1, so spreading cell values with it keeps their total.
    """
    edges = torch.arange(n_cells + 1, dtype=dtype) * (size / n_cells)
    lo = torch.arange(size, dtype=dtype)[:, None]
    overlap = (torch.minimum(lo + 1, edges[None, 1:]) - torch.maximum(lo, edges[None, :-1])).clamp(min=0)
    return overlap * (n_cells / size)


def pixel_map(values_BL: Tensor, patch_nums: Sequence[int], image_hw: tuple[int, int], *,
              per_scale: bool = False) -> Tensor:
    """Token values [B, L] (in scale order) -> pixel maps [B, H, W] (or [B, K, H, W] with ``per_scale``).

    Scale k's grid is laid over the whole image and each token's value spread evenly over its
    cell, so map.sum((-2, -1)) equals values_BL.sum(-1) (per scale with ``per_scale``). Image
    padding inside the tokenizer (at most 2**downsample - 1 pixels) is ignored: cells tile the
    image itself.
    """
    H, W = image_hw
    if values_BL.dim() != 2 or values_BL.shape[1] != sum(p * p for p in patch_nums):
        raise ValueError(f"values must be [B, {sum(p * p for p in patch_nums)}], got shape {tuple(values_BL.shape)}")
    maps, start = [], 0
    for pn in patch_nums:
        grid_Bpp = values_BL[:, start : start + pn * pn].reshape(-1, pn, pn)
        start += pn * pn
        rows = cell_weights(pn, H, values_BL.dtype).to(values_BL.device)
        cols = cell_weights(pn, W, values_BL.dtype).to(values_BL.device)
        maps.append(rows @ grid_Bpp @ cols.T)
    stacked = torch.stack(maps, dim=1)
    return stacked if per_scale else stacked.sum(1)


# =============================================================================================
# Likelihoods with a gradient to the pixels
# =============================================================================================
def _area_down(f: Tensor, pn: int) -> Tensor:
    return f if f.shape[-1] == pn else F.interpolate(f, size=(pn, pn), mode="area")


def straight_through_log_likelihoods(model: VARModel, images: Tensor, classes: Sequence[int], *,
                                     temperature: float | None = None) -> Tensor:
    """log p(x | y) [B, C] with the value of ``class_log_likelihoods`` and a straight-through
    gradient to ``images``.

    The quantiser's nearest-code choice has no gradient, so two straight-through paths carry
    it from the log-likelihoods to the encoder features f (and on to the pixels), each keeping
    the forward values exactly those of the classifier:

    - teacher-forcing inputs: scale k's input has the value of f_hat built from the tokens of
      scales < k and the gradient of f (as in VQ-VAE training, van den Oord et al. 2017);
    - token targets: the one-hot choice of code v at a token has the gradient of
      softmax_v(-||r - e_v||^2 / T), r the residual quantised there (straight-through softmax,
      Bengio et al. 2013; Jang et al. 2017). T defaults to the mean nearest-code squared
      distance of the batch, so the relaxation adapts to the codebook's scale.

    The first path alone would ignore which code a token took -- the very evidence TMI reads --
    so both are used.
    """
    tok = model.tokenizer
    x = images
    f_BChw = tok.features(x)
    B, Cv = f_BChw.shape[:2]
    with torch.no_grad():
        tokens = tok.quantize(f_BChw.detach()).tokens
        codes_VC = tok.codebook.weight.detach()
        code_maps = [tok.code_map(k, t).detach() for k, t in enumerate(tokens)]
    f_st = f_BChw - f_BChw.detach()  # zero value, gradient of f
    inputs, soft_onehots, dists, f_hat = [], [], [], None
    for k, pn in enumerate(model.patch_nums):
        prefix = torch.zeros_like(code_maps[0]) if f_hat is None else f_hat
        r_NC = _area_down(f_BChw - prefix, pn).permute(0, 2, 3, 1).reshape(-1, Cv)  # residual quantised at scale k
        d_NV = (r_NC[:, None, :] - codes_VC[None]).pow(2).sum(-1)
        dists.append(d_NV)
        f_hat = code_maps[k] if f_hat is None else f_hat + code_maps[k]
        if k + 1 < len(model.patch_nums):
            inputs.append(tok.next_scale_input(f_hat + f_st, k))
    T = temperature if temperature is not None else float(
        torch.cat([d.detach().min(1).values for d in dists]).mean().clamp(min=1e-8))
    for k, d_NV in enumerate(dists):
        q_NV = torch.softmax(-d_NV / T, dim=1)
        hard_NV = F.one_hot(tokens[k].reshape(-1), q_NV.shape[1]).to(q_NV.dtype)
        soft_onehots.append((hard_NV + q_NV - q_NV.detach()).view(B, -1, q_NV.shape[1]))
    x_BlC = torch.cat(inputs, 1) if inputs else codes_VC.new_zeros(B, 0, Cv)
    onehot_BLV = torch.cat(soft_onehots, 1)
    lls = []
    for c in classes:
        logp_BLV = torch.log_softmax(model.forward_logits(x_BlC, torch.full((B,), c, device=model.device)), -1)
        lls.append((onehot_BLV * logp_BLV).sum((1, 2)))
    return torch.stack(lls, 1)

