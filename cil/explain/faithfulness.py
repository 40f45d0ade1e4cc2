"""Faithfulness of saliency maps: insertion and deletion curves, their AUC, and baseline maps.

Insertion and deletion curves (Petsiuk, Das, Saenko 2018, "RISE"): pixels ranked by a map are
revealed on a canvas (insertion) or removed from the image (deletion) in ``steps`` equal steps
while a classifier's probability of a target class is tracked; the area under each curve (x
from 0 to 1) summarises it -- higher is better for insertion, lower for deletion.

Everything here works for any classifier given as a score function (``ScoreFn``) or a logits
function. Baseline maps: random order, input-gradient saliency (Simonyan, Vedaldi, Zisserman
2014) and occlusion (Zeiler & Fergus 2014). Two adapters bring in the VAR classifier: as a judge
(:func:`var_log_posterior_fn`) and as a gradient baseline (:func:`var_gradient_saliency`, through
``varc.explain.straight_through_log_likelihoods``). The token-wise mutual information maps
being judged live in ``varc.explain``.

Shapes: B images, C classes, H x W pixels, S + 1 curve points.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from varc.explain import log_prior, straight_through_log_likelihoods
from varc.model import VARModel

# score_fn(images [N, C, H, W], target class indices [N]) -> probability of the target [N]
ScoreFn = Callable[[Tensor, Tensor], Tensor]


# =============================================================================================
# Baseline saliency maps
# =============================================================================================
def random_saliency(n: int, image_hw: tuple[int, int], *, generator: torch.Generator | None = None) -> Tensor:
    """Uniform noise [n, H, W]: a random pixel order, the floor every map should beat."""
    return torch.rand((n, *image_hw), generator=generator, dtype=torch.float64)


def log_odds(scores_BC: Tensor, target_B: Tensor) -> Tensor:
    """log p(target) - log p(not target) = s_target - logsumexp_{y != target} s_y, for scores s = logits: [B].

    Its gradient is that of log p(target | x) divided by 1 - p(target | x): the same direction,
    hence the same pixel ranking, but it does not vanish in floating point when the classifier is
    sure (the VAR classifier's log-likelihood gaps are tens of nats, where 1 - p rounds to 0 and
    the gradient of log p(target | x) loses the target's own term).
    """
    target_B = torch.as_tensor(target_B, device=scores_BC.device)
    if scores_BC.shape[1] < 2:
        raise ValueError("log-odds need at least two classes")
    rows = torch.arange(len(target_B), device=scores_BC.device)
    others = scores_BC.masked_fill(F.one_hot(target_B, scores_BC.shape[1]).bool(), float("-inf"))
    return scores_BC[rows, target_B] - others.logsumexp(1)


def input_gradient(logits_fn: Callable[[Tensor], Tensor], images: Tensor, target_B: Tensor) -> Tensor:
    """|d log-odds(target) / d pixel|, summed over channels: [B, H, W] (Simonyan et al. 2014; see :func:`log_odds`)."""
    x = images.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_odds(logits_fn(x), target_B).sum(), x)
    return grad.abs().sum(1).double()


@torch.no_grad()
def occlusion(log_prob_fn: ScoreFn, images: Tensor, target_B: Tensor, *, patch: int = 4, stride: int = 2,
              fill: float = 0.0, batch_size: int = 512) -> Tensor:
    """Mean drop in log p(target) when a patch x patch square of ``fill`` covers a pixel: [B, H, W].

    After Zeiler & Fergus 2014; the drop is taken in log-probability, not probability, so that
    a very confident classifier's saturated probabilities still rank pixels.
    ``log_prob_fn(images, targets)`` returns log p(target | image).
    """
    B, _, H, W = images.shape
    if not 1 <= patch <= min(H, W) or stride < 1:
        raise ValueError(f"occlusion: need 1 <= patch <= {min(H, W)} and stride >= 1, got {patch}, {stride}")
    tops = sorted(set(list(range(0, H - patch + 1, stride)) + [H - patch]))
    lefts = sorted(set(list(range(0, W - patch + 1, stride)) + [W - patch]))
    boxes = [(t, l) for t in tops for l in lefts]
    target_B = torch.as_tensor(target_B)
    base_B = log_prob_fn(images, target_B).double().cpu()
    drop_BHW = torch.zeros(B, H, W, dtype=torch.float64)
    count_HW = torch.zeros(H, W, dtype=torch.float64)
    per = max(1, batch_size // B)
    for s in range(0, len(boxes), per):
        chunk = boxes[s : s + per]
        x = images.unsqueeze(0).repeat(len(chunk), 1, 1, 1, 1)  # [n, B, C, H, W]
        for i, (t, l) in enumerate(chunk):
            x[i, :, :, t : t + patch, l : l + patch] = fill
        lp = log_prob_fn(x.flatten(0, 1), target_B.repeat(len(chunk))).double().cpu().view(len(chunk), B)
        for i, (t, l) in enumerate(chunk):
            drop_BHW[:, t : t + patch, l : l + patch] += (base_B - lp[i])[:, None, None]
            count_HW[t : t + patch, l : l + patch] += 1
    return drop_BHW / count_HW.clamp(min=1)



def var_gradient_saliency(model: VARModel, images: Tensor, target_B: Tensor, classes: Sequence[int] | None = None,
                          *, log_prior_C: Tensor | None = None, temperature: float | None = None) -> Tensor:
    """|d log p(target | x) / d pixel| of the VAR classifier up to a per-image factor (the gradient of
    the log-odds, see :func:`log_odds`), summed over channels: [B, H, W].

    The quantiser's nearest-code choice has no gradient; the gradient reaches the pixels through
    the two straight-through paths of ``varc.explain.straight_through_log_likelihoods`` (teacher-
    forcing inputs and token targets), whose forward values are exactly the classifier's.
    ``target_B`` indexes ``classes`` (default: the model's classes). With a single class the
    posterior is constant and the map is zero.
    """
    classes = [int(c) for c in (model.classes if classes is None else classes)]
    if len(classes) < 2:
        return torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.float64)
    x = images.detach().to(model.device, torch.float32).clone().requires_grad_(True)
    ll_BC = straight_through_log_likelihoods(model, x, classes, temperature=temperature)
    prior_C = log_prior(log_prior_C, len(classes), ll_BC)
    (grad,) = torch.autograd.grad(log_odds(ll_BC + prior_C, target_B).sum(), x)
    return grad.abs().sum(1).double().cpu()


# =============================================================================================
# Insertion / deletion
# =============================================================================================
def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with replicated borders (the insertion canvas of RISE)."""
    if sigma <= 0:
        return images.clone()
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = images.shape[1]
    x = F.pad(images, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)


def pixel_ranks(saliency_BHW: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Rank of every pixel, 0 = most salient: [B, H*W].

    Ties keep reading order, or take a random order drawn from ``generator``.
    """
    s_BP = saliency_BHW.flatten(1).double().cpu()
    B, P = s_BP.shape
    if generator is not None:
        perm_BP = torch.stack([torch.randperm(P, generator=generator) for _ in range(B)])
        order_BP = perm_BP.gather(1, torch.argsort(-s_BP.gather(1, perm_BP), dim=1, stable=True))
    else:
        order_BP = torch.argsort(-s_BP, dim=1, stable=True)
    return torch.empty_like(order_BP).scatter_(1, order_BP, torch.arange(P).expand(B, P).contiguous())


def step_counts(n_pixels: int, steps: int) -> list[int]:
    """Pixels changed at each of the ``steps + 1`` curve points: round(i / steps * n), 0 to n."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [round(i * n_pixels / steps) for i in range(steps + 1)]


@torch.no_grad()
def perturbation_curve(score_fn: ScoreFn, images: Tensor, saliency_BHW: Tensor, target_B: Tensor, *,
                       kind: str, canvas: Tensor, steps: int = 16, batch_size: int = 256,
                       generator: torch.Generator | None = None, ends_B2: Tensor | None = None) -> Tensor:
    """Target probability along an insertion or deletion path: [B, steps + 1].

    Insertion starts from ``canvas`` and reveals the image's pixels, most salient first;
    deletion starts from the image and replaces its pixels by the canvas's, most salient first.
    Point i has round(i / steps * H * W) pixels changed, so the x axis runs from 0 to 1.
    ``score_fn(images, targets)`` returns p(target | image); images and steps are batched
    together, ``batch_size`` images per call. The first and last points do not depend on the
    map (canvas and image); ``ends_B2`` passes their scores in to save two calls per image, and
    ``generator`` breaks ties between equally salient pixels at random (else reading order).
    """
    if kind not in ("insertion", "deletion"):
        raise ValueError(f"kind {kind!r}: use 'insertion' or 'deletion'")
    if canvas.shape != images.shape:
        raise ValueError(f"canvas shape {tuple(canvas.shape)} differs from the images' {tuple(images.shape)}")
    B, C, H, W = images.shape
    rank_BP = pixel_ranks(saliency_BHW, generator=generator).to(images.device)
    counts = step_counts(H * W, steps)
    target_B = torch.as_tensor(target_B, device=images.device)
    out = torch.empty(len(counts), B, dtype=torch.float64)
    inner = range(len(counts))
    if ends_B2 is not None:
        if ends_B2.shape != (B, 2):
            raise ValueError(f"ends_B2 must be [{B}, 2], got shape {tuple(ends_B2.shape)}")
        out[0], out[-1] = ends_B2[:, 0].double().cpu(), ends_B2[:, 1].double().cpu()
        inner = range(1, len(counts) - 1)
    pairs = [(i, b) for i in inner for b in range(B)]  # (step, image), step-major
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        ii = torch.tensor([p[0] for p in chunk])
        bb = torch.tensor([p[1] for p in chunk], device=images.device)
        n_chg = torch.tensor([counts[i] for i in ii.tolist()], device=images.device)
        changed = (rank_BP[bb] < n_chg[:, None]).view(-1, 1, H, W)
        if kind == "insertion":
            x = torch.where(changed, images[bb], canvas[bb])
        else:
            x = torch.where(changed, canvas[bb], images[bb])
        out[ii, bb.cpu()] = score_fn(x, target_B[bb]).double().cpu()
    return out.T.contiguous()


@torch.no_grad()
def curve_ends(score_fn: ScoreFn, images: Tensor, target_B: Tensor, *, kind: str, canvas: Tensor) -> Tensor:
    """Scores at the first and last points of every map's curve: [B, 2] (see ``perturbation_curve``)."""
    if kind not in ("insertion", "deletion"):
        raise ValueError(f"kind {kind!r}: use 'insertion' or 'deletion'")
    target_B = torch.as_tensor(target_B, device=images.device)
    both = score_fn(torch.cat([images, canvas]), torch.cat([target_B, target_B])).double().cpu().view(2, -1)
    return both.T.flip(1).contiguous() if kind == "insertion" else both.T.contiguous()


def auc(curve_BS: Tensor) -> Tensor:
    """Area under curves sampled at evenly spaced x from 0 to 1 (trapezoid rule): [B]."""
    if curve_BS.dim() != 2 or curve_BS.shape[1] < 2:
        raise ValueError(f"curves must be [B, S + 1] with S >= 1, got shape {tuple(curve_BS.shape)}")
    S = curve_BS.shape[1] - 1
    return (curve_BS[:, 1:] + curve_BS[:, :-1]).sum(1) / (2 * S)


# =============================================================================================
# The VAR classifier as a judge
# =============================================================================================
def var_log_posterior_fn(model: VARModel, classes: Sequence[int] | None = None, *,
                         log_prior_C: Tensor | None = None, chunk_size: int = 4096) -> ScoreFn:
    """log p(target | image) under the VAR classifier (softmax over log p(x | y) + log p(y))."""
    classes = [int(c) for c in (model.classes if classes is None else classes)]

    @torch.no_grad()
    def fn(images: Tensor, target_N: Tensor) -> Tensor:
        ll_NC = model.class_log_likelihoods(images.to(model.device), classes, chunk_size=chunk_size).double()
        prior_C = log_prior(log_prior_C, len(classes), ll_NC)
        logpost_NC = torch.log_softmax(ll_NC + prior_C, dim=1)
        return logpost_NC.gather(1, torch.as_tensor(target_N, device=logpost_NC.device)[:, None])[:, 0]

    return fn


def probability_fn(log_prob_fn: ScoreFn) -> ScoreFn:
    """exp of a log-probability score function (what the curves track)."""
    return lambda images, target: log_prob_fn(images, target).exp()
