"""Training and evaluation loops for the tokenizer and the transformer.

Deterministic given ``seed`` (all shuffling, label dropout and code restarts draw from one
seeded generator), one ``progress`` call per epoch, and no hidden state: the caller chooses
exactly which parameters an optimizer holds (``params``), so a class-incremental strategy can
train only new classes' heads while every other tensor stays bit-identical.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varc.heads import NULL_CLASS
from varc.model import VARModel
from varc.tokenizer import MultiScaleVQVAE

ProgressFn = Callable[[dict], None]
# loss_fn(model, tokens_batch, labels_batch) -> scalar loss; labels already carry label dropout
LossFn = Callable[[VARModel, list[Tensor], Tensor], Tensor]


def as_image_tensor(array: np.ndarray | Tensor) -> Tensor:
    """uint8 images [N, H, W] or [N, H, W, C] (or floats already in [0, 1], [N, C, H, W]) -> float [N, C, H, W]."""
    if isinstance(array, Tensor) and array.is_floating_point():
        return array if array.dim() == 4 else array[:, None]
    a = torch.as_tensor(np.asarray(array))
    if a.dim() == 3:
        a = a[:, None]
    elif a.dim() == 4:
        a = a.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {tuple(a.shape)}")
    return a.float().div_(255.0).contiguous()


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for s in range(0, n, batch_size):
        yield order[s : s + batch_size]


def _cosine_lr(step: int, total: int, warmup: int, base: float, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


class _OnlyTrainable:
    """Within the block, exactly ``params`` require grad (no wasted gradients, no stray updates)."""

    def __init__(self, module: nn.Module, params: Sequence[nn.Parameter]) -> None:
        self.module, self.ids = module, {id(p) for p in params}

    def __enter__(self) -> None:
        self.saved = [(p, p.requires_grad) for p in self.module.parameters()]
        for p, _ in self.saved:
            p.requires_grad_(id(p) in self.ids)

    def __exit__(self, *exc: object) -> None:
        for p, flag in self.saved:
            p.requires_grad_(flag)


class WeightAverage:
    """An exponential moving average of ``params``, taken after every optimizer step (Polyak &
    Juditsky 1992; the warm-up of the decay, min(decay, (1 + t) / (10 + t)), keeps the first
    steps from being dominated by the initial weights). ``apply`` writes the average into the
    parameters: only ``params`` are touched, so frozen classes stay bit-identical."""

    def __init__(self, params: Sequence[nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.params, self.decay, self.steps = list(params), decay, 0
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for avg, p in zip(self.shadow, self.params):
            avg.mul_(d).add_(p.detach(), alpha=1 - d)
        self.steps += 1

    @torch.no_grad()
    def apply(self) -> None:
        for avg, p in zip(self.shadow, self.params):
            p.copy_(avg)


class KeepBest:
    """Early stopping by selection: after each epoch, each group of parameters is remembered
    when its held-out loss is the lowest so far, and ``restore`` writes the remembered values
    back (the epoch count chosen on held-out data, as in Prechelt, "Early Stopping - But When?",
    1998). Groups are disjoint (e.g. one per class's head), so each is chosen on its own loss."""

    def __init__(self, groups: dict[int | str, Sequence[nn.Parameter]]) -> None:
        self.groups = {k: list(v) for k, v in groups.items()}
        self.best: dict[int | str, float] = {k: math.inf for k in self.groups}
        self.best_epoch: dict[int | str, int] = {k: 0 for k in self.groups}
        self.saved = {k: [p.detach().clone() for p in v] for k, v in self.groups.items()}
        self.epoch = 0

    def observe(self, losses: dict[int | str, float]) -> None:
        """One epoch's held-out loss of every group."""
        if set(losses) != set(self.groups):
            raise ValueError(f"losses for {sorted(map(str, losses))}, groups {sorted(map(str, self.groups))}")
        self.epoch += 1
        for k, loss in losses.items():
            if loss < self.best[k]:
                self.best[k], self.best_epoch[k] = loss, self.epoch
                self.saved[k] = [p.detach().clone() for p in self.groups[k]]

    @torch.no_grad()
    def restore(self) -> dict[int | str, int]:
        """Write each group's best values back; return the epoch each came from (0: before training)."""
        for k, params in self.groups.items():
            for p, v in zip(params, self.saved[k]):
                p.copy_(v)
        return dict(self.best_epoch)


@torch.no_grad()
def held_out_nll(model: VARModel, tokens: list[Tensor], labels: Tensor, *, batch_size: int = 512) -> dict[int, float]:
    """Mean negative log-likelihood per image (nats) of each class's images under that class."""
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    nll_N = torch.cat([-model.token_log_probs([t[st:st + batch_size].to(model.device) for t in tokens],
                                              labels[st:st + batch_size].to(model.device)).sum(1).cpu()
                       for st in range(0, len(labels), batch_size)])
    return {int(c): float(nll_N[labels == c].mean()) for c in labels.unique()}


# =============================================================================================
# Tokenizer
# =============================================================================================
def train_tokenizer(
    model: VARModel | MultiScaleVQVAE,
    images: Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 2e-3,
    restart_every: int = 25,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> list[dict]:
    """Train the multi-scale VQ-VAE: reconstruction MSE + VQ loss, straight-through estimator.

    Codes unused for ``restart_every`` steps are restarted on random residual vectors of the
    current batch (dead codes appear fast on MNIST); restarts stop for the last 10% of steps.
    Each epoch reports reconstruction MSE, VQ loss, code usage (fraction of codes used in the
    epoch), code perplexity and the number of restarts.
    """
    tok = model.tokenizer if isinstance(model, VARModel) else model
    device = next(tok.parameters()).device
    images = as_image_tensor(images)
    n, V = len(images), tok.cfg.vocab_size
    g = torch.Generator().manual_seed(seed)
    params = list(tok.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    step, history = 0, []
    window_counts = torch.zeros(V, dtype=torch.long)
    with _OnlyTrainable(tok, params):
        tok.train()
        for epoch in range(epochs):
            t0 = time.perf_counter()
            sums = {"recon_mse": 0.0, "vq_loss": 0.0}
            epoch_counts = torch.zeros(V, dtype=torch.long)
            restarts = 0
            for idx in _batches(n, batch_size, g):
                for group in opt.param_groups:
                    group["lr"] = _cosine_lr(step, total, min(100, total // 10 + 1), lr)
                x = images[idx].to(device)
                recon, q = tok(x)
                mse = F.mse_loss(recon, x)
                loss = mse + q.vq_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                counts = torch.bincount(torch.cat([t.flatten() for t in q.tokens]).cpu(), minlength=V)
                window_counts += counts
                epoch_counts += counts
                sums["recon_mse"] += mse.item() * len(idx)
                sums["vq_loss"] += q.vq_loss.item() * len(idx)
                if step % restart_every == 0:
                    if step < 0.9 * total:
                        restarts += _restart_dead_codes(tok, opt, window_counts == 0, q.residuals, g)
                    window_counts.zero_()
            p = epoch_counts.double() / epoch_counts.sum()
            perplexity = math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())
            rec = {
                "epoch": epoch + 1, "epochs": epochs,
                "recon_mse": sums["recon_mse"] / n, "vq_loss": sums["vq_loss"] / n,
                "code_usage": (epoch_counts > 0).float().mean().item(), "perplexity": perplexity,
                "restarts": restarts, "seconds": time.perf_counter() - t0,
            }
            history.append(rec)
            if progress:
                progress(rec)
    tok.eval()
    return history


@torch.no_grad()
def _restart_dead_codes(tok: MultiScaleVQVAE, opt: torch.optim.Optimizer, dead_V: Tensor, residuals_NC: Tensor,
                        g: torch.Generator) -> int:
    dead = dead_V.nonzero()[:, 0]
    if len(dead) == 0 or len(residuals_NC) == 0:
        return 0
    pick = torch.randint(len(residuals_NC), (len(dead),), generator=g)
    w = tok.codebook.weight
    new = residuals_NC[pick.to(residuals_NC.device)]
    new = new + 0.01 * new.std() * torch.randn(new.shape, generator=g).to(new.device)
    w[dead.to(w.device)] = new.to(w.dtype)
    state = opt.state.get(w, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][dead.to(w.device)] = 0.0
    return len(dead)


@torch.no_grad()
def encode_dataset(model: VARModel, images: Tensor, *, batch_size: int = 512, noise_std: float = 0.0,
                   generator: torch.Generator | None = None) -> list[Tensor]:
    """Token maps of a whole image set, one [N, pn, pn] LongTensor per scale (on the CPU)."""
    images = as_image_tensor(images)
    parts = [model.encode(images[s : s + batch_size], noise_std, generator) for s in range(0, len(images), batch_size)]
    return [torch.cat([p[k] for p in parts]).cpu() for k in range(model.num_scales)]


def shifted_copies(images_NCHW: Tensor, *, copies: int, max_shift: int, seed: int) -> Tensor:
    """The images followed by ``copies`` shifted copies of them: [N * (1 + copies), C, H, W].

    Each copy moves every image by its own random whole-pixel offset (dy, dx), both in
    [-max_shift, max_shift] and not both zero, repeating the edge pixels into the space it
    leaves (so a background of any value stays that value). Deterministic for ``seed``. A
    class-conditional density model trained on them sees each class's images at a few
    positions instead of one: the translation augmentation common in image classifiers."""
    images = as_image_tensor(images_NCHW)
    if copies < 0 or max_shift < 1:
        raise ValueError(f"copies must be >= 0 and max_shift >= 1, got {copies} and {max_shift}")
    n, _, h, w = images.shape
    s = max_shift
    padded = F.pad(images, (s, s, s, s), mode="replicate")
    offsets = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1) if (dy, dx) != (0, 0)]
    g = torch.Generator().manual_seed(seed)
    out = [images]
    for _ in range(copies):
        pick_N = torch.randint(len(offsets), (n,), generator=g)
        copy = torch.empty_like(images)
        for i, (dy, dx) in enumerate(offsets):
            rows = (pick_N == i).nonzero().squeeze(1)
            # a shift by (dy, dx) shows the padded image's window that starts at (s - dy, s - dx)
            copy[rows] = padded[rows, :, s - dy : s - dy + h, s - dx : s - dx + w]
        out.append(copy)
    return torch.cat(out)


@torch.no_grad()
def reconstruction_error(model: VARModel, images: Tensor, *, batch_size: int = 512) -> float:
    """Mean squared pixel error of encode -> decode."""
    images = as_image_tensor(images)
    total = 0.0
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size].to(model.device)
        total += F.mse_loss(model.decode(model.encode(x)), x, reduction="sum").item()
    return total / images.numel()


# =============================================================================================
# Transformer
# =============================================================================================
def nll_loss(model: VARModel, tokens: list[Tensor], labels: Tensor) -> Tensor:
    """Mean negative log-likelihood per token (nats): the VAR training objective."""
    return -model.token_log_probs(tokens, labels).mean()


def train_transformer(
    model: VARModel,
    images: Tensor | None = None,
    labels: Tensor | Sequence[int] | None = None,
    *,
    tokens: list[Tensor] | None = None,
    params: Iterable[nn.Parameter] | None = None,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.95),
    optimizer: str = "adamw",
    label_drop: float | None = None,
    grad_clip: float | None = 1.0,
    warmup_steps: int | None = None,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    ema_decay: float = 0.0,
    progress: ProgressFn | None = None,
) -> list[dict]:
    """Train the transformer (trunk and/or heads) on (images, labels) by teacher forcing.

    ``params``: exactly the parameters to update (default: those of the trunk and of every
    head, null included, that require grad, so ``model.freeze_trunk()`` is respected); every
    other parameter is left untouched. Weight decay applies to matrices only.
    ``label_drop``: probability that a label becomes the null class (default: the config's);
    dropped labels train the null head. ``tokens`` (from :func:`encode_dataset`) skips
    tokenising. ``loss_fn(model, tokens, labels)`` replaces the NLL (e.g. for CCA fine-tuning).
    ``ema_decay`` > 0: the parameters end as the moving average of their trajectory
    (:class:`WeightAverage`) instead of the last step's values.
    Returns one record per epoch (also passed to ``progress``).
    """
    if tokens is None:
        if images is None:
            raise ValueError("give images or tokens")
        tokens = encode_dataset(model, images)
    if labels is None:
        raise ValueError("labels are required")
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    n = len(labels)
    if tokens[0].shape[0] != n:
        raise ValueError(f"{tokens[0].shape[0]} images but {n} labels")
    missing = sorted(set(labels.unique().tolist()) - set(model.classes))
    if missing:
        raise ValueError(f"classes {missing} have no parameters; call model.add_classes({missing}) first")
    if params is None:
        params = [p for p in model.transformer_parameters() if p.requires_grad]
    params = list(params)
    if not params:
        raise ValueError("no parameters to train")
    p_drop = model.config.label_drop if label_drop is None else label_drop
    loss_fn = loss_fn or nll_loss
    decay = [p for p in params if p.dim() == 2]
    no_decay = [p for p in params if p.dim() != 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=betas)
    else:
        raise ValueError(f"optimizer {optimizer!r}: use 'adamw' or 'adam'")
    average = WeightAverage(params, ema_decay) if ema_decay else None
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    warmup = warmup_steps if warmup_steps is not None else min(200, total // 20 + 1)
    step, history = 0, []
    L = model.seq_len
    with _OnlyTrainable(model, params):
        for epoch in range(epochs):
            t0 = time.perf_counter()
            loss_sum = 0.0
            for idx in _batches(n, batch_size, g):
                cur_lr = _cosine_lr(step, total, warmup, lr)
                for group in opt.param_groups:
                    group["lr"] = cur_lr
                y = labels[idx]
                if p_drop > 0:
                    y = torch.where(torch.rand(len(idx), generator=g) < p_drop, torch.full_like(y, NULL_CLASS), y)
                tok_b = [t[idx].to(model.device) for t in tokens]
                loss = loss_fn(model, tok_b, y.to(model.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                if average is not None:
                    average.update()
                step += 1
                loss_sum += loss.item() * len(idx)
            sec = time.perf_counter() - t0
            rec = {
                "epoch": epoch + 1, "epochs": epochs, "loss": loss_sum / n,
                "nll_per_image": loss_sum / n * L, "lr": cur_lr, "seconds": sec, "tokens_per_s": n * L / sec,
            }
            history.append(rec)
            if progress:
                progress(rec)
    if average is not None:
        average.apply()
    return history


# =============================================================================================
# Classification by likelihood
# =============================================================================================
@torch.no_grad()
def predict(model: VARModel, images: Tensor, classes: Sequence[int] | None = None, *, batch_size: int = 256,
            num_scales: int | None = None, chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """argmax_y log p(x | y) over ``classes`` (default: all the model's classes).

    Returns (predicted class ids [N], scores [N, C] = log p(x | y) in the order of ``classes``).
    """
    classes = list(model.classes if classes is None else classes)
    images = as_image_tensor(images)
    scores_NC = model.class_log_likelihoods(images, classes, num_scales, chunk_size, batch_size=batch_size).cpu()
    return torch.as_tensor(classes)[scores_NC.argmax(1)], scores_NC


def evaluate_accuracy(model: VARModel, images: Tensor, labels: Tensor | Sequence[int],
                      classes: Sequence[int] | None = None, **kw: object) -> dict:
    """Argmax-likelihood accuracy and throughput on a labelled image set."""
    t0 = time.perf_counter()
    pred, _ = predict(model, images, classes, **kw)  # type: ignore[arg-type]
    sec = time.perf_counter() - t0
    labels = torch.as_tensor(labels, dtype=torch.long)
    return {"accuracy": (pred == labels).float().mean().item(), "n": len(labels), "seconds": sec,
            "images_per_s": len(labels) / sec}
