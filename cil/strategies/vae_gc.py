"""The per-class-VAE generative classifier (van de Ven, Li & Tolias 2021).

"Class-Incremental Learning with Generative Classifiers", CVPR Workshops 2021: one VAE per
class, trained on that class's images only; an image is assigned to the class whose VAE gives
it the highest marginal likelihood log p(x|y), estimated by importance sampling with the
encoder as proposal. A later class never touches an earlier class's VAE, so nothing is
overwritten; what can go wrong is only competition between the classes' likelihoods.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Literal

from cil.errors import UserError
from cil.strategies.base import ScoreClassifier
from cil.strategies.registry import StrategyContext, register
from cil.typecheck import PositiveFloat, PositiveInt

if TYPE_CHECKING:
    import torch

_LOG_2PI = math.log(2 * math.pi)


def importance_log_likelihood(
    x_BD: torch.Tensor,
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    log_px_given_z: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    max_rows: int = 1 << 15,
) -> torch.Tensor:
    """[B] importance-sampling estimate of log p(x) = log E_{z~q(z|x)}[p(x|z) p(z) / q(z|x)].

    ``encode(x_BD) -> (mean_BZ, logvar_BZ)`` is a diagonal-Gaussian proposal q(z|x), the prior
    is N(0, I), and ``log_px_given_z(x_BD, z_BSZ) -> [B, S]`` is the decoder's log-likelihood.
    The estimate is logsumexp_s(log w_s) - log S (unbiased for p(x), a lower bound on log p(x)
    in expectation; exact when q is the true posterior). Samples are drawn in blocks of at most
    ``max_rows`` (x, z) pairs to bound the decoder's memory.
    """
    import torch

    mean, logvar = encode(x_BD)
    B, Z = mean.shape
    std = (0.5 * logvar).exp()
    per_block = max(1, max_rows // max(B, 1))
    log_w = []
    for s0 in range(0, n_samples, per_block):
        s = min(per_block, n_samples - s0)
        eps = torch.randn(B, s, Z, generator=generator, dtype=mean.dtype, device=mean.device)
        z = mean[:, None, :] + std[:, None, :] * eps
        log_pz = -0.5 * (z.pow(2).sum(-1) + Z * _LOG_2PI)
        log_qz = -0.5 * (eps.pow(2).sum(-1) + logvar.sum(-1)[:, None] + Z * _LOG_2PI)
        log_w.append(log_px_given_z(x_BD, z) + log_pz - log_qz)
    return torch.logsumexp(torch.cat(log_w, dim=1), dim=1) - math.log(n_samples)


def make_vae(input_dim: int, hidden: list[int], latent_dim: int, generator: torch.Generator):
    """A fully connected VAE as a ModuleDict: ``encoder`` x -> [mean, logvar] (2 * latent_dim),
    ``decoder`` z -> pixel logits; ReLU between layers, the decoder mirrors the encoder.

    Weights and biases are drawn U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default Linear
    initialisation) from ``generator``, so a class's VAE depends only on its own seed.
    """
    import torch
    from torch import nn

    def mlp(sizes: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = nn.Linear(a, b)
            bound = 1.0 / math.sqrt(a)
            with torch.no_grad():
                lin.weight.copy_(torch.rand(b, a, generator=generator) * (2 * bound) - bound)
                lin.bias.copy_(torch.rand(b, generator=generator) * (2 * bound) - bound)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    return nn.ModuleDict({
        "encoder": mlp([input_dim, *hidden, 2 * latent_dim]),
        "decoder": mlp([latent_dim, *reversed(hidden), input_dim]),
    })


class PerClassVAEClassifier(ScoreClassifier):
    """One VAE per class (van de Ven, Li & Tolias 2021); classify by argmax_y log p(x|y).

    ``update(images, labels)`` trains, for each class present, that class's VAE (created on
    first sight) on its images only, with its own Adam optimiser, for ``iterations`` minibatch
    steps of the negative ELBO (Bernoulli likelihood: binary cross-entropy of the decoder's
    logits against the pixel values in [0, 1], plus the analytic KL to N(0, I)); no other VAE is
    touched, so earlier classes' parameters stay bit-identical. ``scores(images)`` is the
    importance-sampled log p(x|y) with ``importance_samples`` samples for every class seen (the
    same noise for every class, drawn from a generator seeded with ``seed``: evaluation is
    deterministic and leaves the global RNG alone), -inf for the others.

    A VAE never changes once its class is learnt, so each image's estimates are remembered
    (``varc.memo.ScoreMemo``): the evaluation after experience k scores only the new classes.
    The importance noise is drawn per batch, so an estimate depends on the image, its place in
    the batch and the batch's size; the memo's key holds all three, and a remembered estimate is
    bit-identical to a fresh one.
    """

    checkpoints = True

    def __init__(self, n_classes: int, input_dim: int, *, hidden: tuple[int, ...] | list[int] = (85, 85),
                 latent_dim: int = 5, iterations: int = 1000, batch_size: int = 128, lr: float = 1e-3,
                 importance_samples: PositiveInt = 100, eval_likelihood: str = "bernoulli", seed: int = 0,
                 device: Any = "cpu", log: Callable[[str], None] | None = None) -> None:
        from torch import nn

        if eval_likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"eval_likelihood must be 'bernoulli' or 'gaussian', got {eval_likelihood!r}")
        for key, value in (("latent_dim", latent_dim), ("iterations", iterations), ("batch_size", batch_size),
                           ("importance_samples", importance_samples), *(("hidden", h) for h in hidden)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.n_classes, self.input_dim = n_classes, input_dim
        self.hidden, self.latent_dim = list(hidden), latent_dim
        self.iterations, self.batch_size, self.lr = iterations, batch_size, lr
        self.importance_samples, self.eval_likelihood = importance_samples, eval_likelihood
        self.seed, self.device, self.log = seed, device, log
        self.vaes = nn.ModuleDict()  # str(class) -> that class's VAE, each its own module
        from varc.memo import ScoreMemo

        self.memo = ScoreMemo(n_classes)

    @property
    def classes(self) -> list[int]:
        return sorted(int(k) for k in self.vaes)

    def _flat(self, x):
        import torch

        return x.reshape(len(x), -1).to(self.device, torch.float32)

    def _new_vae(self, c: int):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1000 + c)
        return make_vae(self.input_dim, self.hidden, self.latent_dim, g).to(self.device)

    # -- training ---------------------------------------------------------------------------------
    def update(self, x_BD: torch.Tensor, y_B: torch.Tensor) -> None:
        """Train the VAE of every class in ``y_B`` on that class's images (a class seen before
        continues from its current weights with a fresh optimiser)."""
        import torch

        x, y = self._flat(x_BD), y_B.to(self.device, torch.long)
        for c in torch.unique(y).tolist():
            if str(c) not in self.vaes:
                self.vaes[str(c)] = self._new_vae(c)
            t0 = time.perf_counter()
            loss = self._train_vae(self.vaes[str(c)], x[y == c], seed=self.seed * 1000 + c)
            self.memo.forget([c])  # a class seen again has moved on
            if self.log is not None:
                self.log(f"class {c}: {self.iterations} iterations on {int((y == c).sum())} images, "
                         f"final -ELBO/pixel {loss:.4f} ({time.perf_counter() - t0:.1f} s)")

    def _train_vae(self, vae, x_ND: torch.Tensor, seed: int) -> float:
        import torch
        import torch.nn.functional as F

        g = torch.Generator().manual_seed(seed + 1)  # minibatch order and reparameterisation noise
        opt = torch.optim.Adam(vae.parameters(), lr=self.lr)
        n, bs = len(x_ND), min(self.batch_size, len(x_ND))
        order, pos, loss = torch.randperm(n, generator=g), 0, torch.tensor(0.0)
        vae.train()
        for _ in range(self.iterations):
            if pos + bs > n:  # a new shuffled pass over the class's images
                order, pos = torch.randperm(n, generator=g), 0
            xb = x_ND[order[pos:pos + bs].to(x_ND.device)]
            pos += bs
            mean, logvar = vae["encoder"](xb).chunk(2, dim=1)
            eps = torch.randn(mean.shape, generator=g).to(mean.device)
            logits = vae["decoder"](mean + (0.5 * logvar).exp() * eps)
            recon = F.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(1)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
            # Per image -ELBO averaged over the batch, divided by the number of pixels (the scale of
            # the authors' loss: BCE averaged over pixels + KL / pixels).
            loss = (recon + kl).mean() / x_ND.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        vae.eval()
        return float(loss.detach())

    # -- scoring ----------------------------------------------------------------------------------
    def log_likelihood(self, vae, x_BD: torch.Tensor, n_samples: int, generator=None) -> torch.Tensor:
        """[B] importance-sampled log p(x) under one VAE."""
        import torch
        import torch.nn.functional as F

        def encode(x):
            return vae["encoder"](x).chunk(2, dim=1)

        def log_px_given_z(x, z_BSZ):
            logits = vae["decoder"](z_BSZ)  # [B, S, D]
            if self.eval_likelihood == "bernoulli":
                return -F.binary_cross_entropy_with_logits(
                    logits, x[:, None, :].expand_as(logits), reduction="none").sum(-1)
            # unit-variance Gaussian around the decoder's mean, as the authors' evaluation code does
            return -0.5 * ((x[:, None, :] - torch.sigmoid(logits)).pow(2).sum(-1) + x.shape[1] * _LOG_2PI)

        with torch.no_grad():
            return importance_log_likelihood(self._flat(x_BD), encode, log_px_given_z, n_samples,
                                             generator=generator)

    def scores(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[B, n_classes]: log p(x|y) (uniform class prior) for seen classes, -inf for the others."""
        import torch

        from varc.memo import digests

        out = torch.full((len(x_BD), self.n_classes), float("-inf"), device=self.device)
        classes = self.classes
        if not classes:
            return out.to(x_BD.device)
        x = self._flat(x_BD)
        B = len(x)
        keys = digests(x, [f"{b}/{B}".encode() for b in range(B)])  # the noise depends on b and B

        def estimate(rows_b, some: list[int]):
            ll_BC = torch.stack([self._class_log_likelihood(c, x) for c in some], dim=1)
            return ll_BC[rows_b.to(ll_BC.device)]  # the whole batch is scored: the same noise as always

        out[:, classes] = self.memo.scores(keys, classes, estimate)[..., 0].to(out.device)
        return out.to(x_BD.device)

    def _class_log_likelihood(self, c: int, x_BD: torch.Tensor) -> torch.Tensor:
        """[B] estimates under class c's VAE, with the noise every class shares."""
        import torch

        g = torch.Generator(device=torch.device(self.device)).manual_seed(self.seed)
        return self.log_likelihood(self.vaes[str(c)], x_BD, self.importance_samples, generator=g)

    def state_dict(self) -> dict:
        return {"classes": self.classes, "vaes": {k: v.detach().cpu() for k, v in self.vaes.state_dict().items()},
                "memo": self.memo.state()}  # a resumed run estimates again nothing it had estimated

    def load_state_dict(self, state: dict) -> None:
        from torch import nn

        self.vaes = nn.ModuleDict({str(c): self._new_vae(int(c)) for c in state["classes"]})
        self.vaes.load_state_dict(state["vaes"])
        self.vaes.eval()
        if "memo" in state:
            self.memo.load(state["memo"])
        else:  # a checkpoint written before the memo was saved
            self.memo.clear()


def _check(params: dict, *, where: str, image_shape: tuple[int, int, int] | None) -> None:
    if not params["hidden"]:
        raise UserError(f"{where}.hidden: give at least one hidden width, e.g. [85, 85]")


@register("vae_gc", check=_check, uses_training=("eval_mb_size",), cost=18,
          help="Generative classifier: one VAE per class, importance-sampled log p(x|y) (van de Ven et al. 2021)")
def build_vae_gc(
    ctx: StrategyContext,
    *,
    # Architecture and training of the paper's Split MNIST runs (the authors' commands.sh:
    # --fc-layers=3 --fc-units=85 --z-dim=5 --iters=1000; batch 128 and Adam lr 1e-3 are their
    # code's MNIST defaults).
    hidden: list[PositiveInt] = [85, 85],  # encoder hidden widths; the decoder mirrors them
    latent_dim: PositiveInt = 5,
    iterations: PositiveInt = 1000,  # Adam steps per class, on that class's images only
    batch_size: PositiveInt = 128,
    vae_lr: PositiveFloat = 1e-3,  # not `lr`: that key is the protocol's training override
    # The paper evaluates with 10,000 importance samples; 100 keeps a CPU evaluation of Split
    # MNIST to about a minute per pass (see docs/baselines.md).
    importance_samples: PositiveInt = 100,
    # log p(x|z) at test time. Training always uses the Bernoulli likelihood (binary
    # cross-entropy); the authors' evaluation code scores with a unit-variance Gaussian instead.
    eval_likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
) -> PerClassVAEClassifier:
    """Generative classifier with one VAE per class (van de Ven, Li & Tolias, CVPR-W 2021):
    argmax_y of the importance-sampled log p(x|y); old classes' VAEs are never trained again.

    Training is the strategy's own Adam loop per class (no Avalanche SGD epoch); the protocol's
    backbone, optimizer, lr and epochs are ignored. Pixels must lie in [0, 1] (Bernoulli decoder).
    """
    name = ctx.name or "vae_gc"
    c, h, w = ctx.image_shape
    log = (lambda msg: print(f"  [{name}] {msg}", flush=True)) if ctx.progress else None
    return PerClassVAEClassifier(ctx.n_classes, c * h * w, hidden=hidden, latent_dim=latent_dim,
                                 iterations=iterations, batch_size=batch_size, lr=vae_lr,
                                 importance_samples=importance_samples, eval_likelihood=eval_likelihood,
                                 seed=ctx.seed, device=ctx.device, log=log)
