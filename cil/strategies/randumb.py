"""RanDumb: random Fourier features of the pixels, then streaming LDA with OAS shrinkage.

Prabhu, Sinha, Kumaraguru, Torr, Sener, Dokania, "RanDumb: Random Representations Outperform
Online Continually Learned Representations", NeurIPS 2024. Nothing is learned by gradient
descent: a fixed random embedding approximating an RBF kernel (Rahimi & Recht 2007), class
means and one shared covariance, updated exactly experience by experience; no image is stored.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from cil.strategies.base import ScoreClassifier
from cil.strategies.registry import StrategyContext, register
from cil.typecheck import PositiveFloat, PositiveInt

if TYPE_CHECKING:
    import torch


def oas_shrinkage(cov_sum_sq: float, cov_trace: float, n_features: int, n_samples: int) -> float:
    """Oracle Approximating Shrinkage coefficient (Chen, Wiesel, Eldar, Hero 2010, eq. 23) of an
    empirical covariance S, from tr(S^2) (= ||S||_F^2) and tr(S).

    As in scikit-learn's ``OAS`` (which the RanDumb authors' code uses), the two 2/p terms of
    eq. 23 are dropped: at p = 10,000 features they change the coefficient by 0.02%.
    The shrunk covariance is (1 - rho) S + rho tr(S)/p I.
    """
    p = n_features
    alpha = cov_sum_sq / p**2  # mean of the squared entries of S
    mu = cov_trace / p
    num = alpha + mu**2
    den = (n_samples + 1) * (alpha - mu**2 / p)
    return 1.0 if den == 0 else min(num / den, 1.0)


class StreamingRFFLDA(ScoreClassifier):
    """Random Fourier features z(x) = sqrt(2/D) cos(W x + b) of flattened images, W ~ N(0, 2 gamma I),
    b ~ U[0, 2 pi) (so z(x).z(x') ~ exp(-gamma ||x - x'||^2)), then linear discriminant analysis
    with the OAS-shrunk pooled within-class covariance.

    ``update`` keeps, in float64, per-class counts and feature sums and the pooled within-class
    scatter sum_i (z_i - m_{y_i})(z_i - m_{y_i})^T, merged batch by batch with the parallel
    update of Chan, Golub & LeVeque (1979), so the state after any sequence of updates equals
    the batch statistics of all images seen. ``scores`` is the LDA discriminant
    z^T S^-1 m_k - m_k^T S^-1 m_k / 2 with S the shrunk maximum-likelihood covariance (uniform
    class prior, as in streaming LDA, Hayes & Kanan 2020); -inf for classes not seen.

    Memory: the projection W is D x input_dim float64 (63 MB at D = 10,000 on 28 x 28 images);
    the scatter is D x D float64 (800 MB at D = 10,000), and solving for the
    discriminant briefly holds two more such matrices (the shrunk covariance and its Cholesky
    factor): about 2.4 GB at D = 10,000, 25 MB at D = 1,024. Time per update is O(N D^2) for the
    statistics plus O(D^3) for the solve at its end (about 10-15 s on one CPU thread at
    D = 10,000); ``scores`` then costs O(B D (input_dim + n_classes)).
    """

    def __init__(self, n_classes: int, input_dim: int, *, n_features: int = 10000, gamma: float | None = None,
                 seed: int = 0, chunk_size: int = 1024, device: Any = "cpu") -> None:
        import torch

        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.n_classes, self.input_dim, self.n_features = n_classes, input_dim, n_features
        self.gamma, self.seed, self.chunk_size, self.device = gamma, seed, max(1, chunk_size), device
        self._proj = self._phase = None  # W [D, input_dim] and b [D], drawn once gamma is known
        self.counts = torch.zeros(n_classes, dtype=torch.long, device=device)
        self.sums = torch.zeros(n_classes, n_features, dtype=torch.float64, device=device)
        self.scatter = None  # [D, D] float64, allocated by the first update (800 MB at D = 10,000)
        self._solution = None  # (classes, V [D, K] = S^-1 M^T, c [K]) cached until the next update

    # -- features ---------------------------------------------------------------------------------
    def _flat(self, x) -> torch.Tensor:
        import torch

        return x.reshape(len(x), -1).to(self.device, torch.float64)

    def set_gamma_from(self, x_BD: torch.Tensor) -> float:
        """gamma = 1 / (input_dim * Var[pixels]) of these images (scikit-learn's gamma='scale')."""
        var = float(self._flat(x_BD).var(unbiased=False))
        if not var > 0:
            raise ValueError("cannot derive gamma from images whose pixels are all equal; set gamma")
        self.gamma = 1.0 / (self.input_dim * var)
        return self.gamma

    def features(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[B, D] float64 random Fourier features of images [B, ...] (flattened)."""
        import torch

        if self.gamma is None:
            raise RuntimeError("gamma is not set yet: call update() or set_gamma_from() first")
        if self._proj is None:  # the draw depends on the seed only (W = sqrt(2 gamma) N(0, I)), not on data
            g = torch.Generator().manual_seed(self.seed)
            omega = torch.randn(self.n_features, self.input_dim, generator=g, dtype=torch.float64)
            self._phase = (torch.rand(self.n_features, generator=g, dtype=torch.float64) * (2 * math.pi)).to(self.device)
            self._proj = omega.mul_(math.sqrt(2.0 * self.gamma)).to(self.device)
        x = self._flat(x_BD)
        return torch.cos(torch.addmm(self._phase, x, self._proj.T)).mul_(math.sqrt(2.0 / self.n_features))

    def _chunks(self, x):
        for i in range(0, len(x), self.chunk_size):
            yield self.features(x[i:i + self.chunk_size])

    # -- statistics -------------------------------------------------------------------------------
    @property
    def classes(self) -> list[int]:
        return [int(c) for c in (self.counts > 0).nonzero().flatten()]

    @property
    def n_seen(self) -> int:
        return int(self.counts.sum())

    def update(self, x_BD: torch.Tensor, y_B: torch.Tensor) -> None:
        """Add images and labels (meant once per experience: it ends by solving for the
        discriminant); with gamma unset, the first call fixes it from its images."""
        import torch

        x, y = self._flat(x_BD), y_B.to(self.device, torch.long)
        if self.gamma is None:
            self.set_gamma_from(x)
        if self.scatter is None:
            self.scatter = torch.zeros(self.n_features, self.n_features, dtype=torch.float64, device=self.device)
        for c in torch.unique(y).tolist():
            xc = x[y == c]
            n_b, n_a = len(xc), int(self.counts[c])
            s_b = torch.zeros(self.n_features, dtype=torch.float64, device=self.device)
            for f in self._chunks(xc):
                s_b += f.sum(0)
            m_b = s_b / n_b
            for f in self._chunks(xc):  # the batch's own scatter about its mean (recomputed, chunked)
                f -= m_b
                self.scatter.addmm_(f.T, f)
            if n_a:  # Chan et al.: M = M_a + M_b + n_a n_b / (n_a + n_b) (m_b - m_a)(m_b - m_a)^T
                delta = m_b - self.sums[c] / n_a
                self.scatter.addr_(delta, delta, alpha=n_a * n_b / (n_a + n_b))
            self.sums[c] += s_b
            self.counts[c] += n_b
        self._solution = None
        self._solve()  # O(D^3) once per update (per experience), so evaluation only projects

    def means(self) -> torch.Tensor:
        """[len(classes), D] float64 class means, in ``classes`` order."""
        import torch

        cls = self.classes
        return self.sums[cls] / self.counts[cls, None].to(torch.float64)

    def covariance(self) -> torch.Tensor:
        """Pooled within-class covariance, maximum likelihood (scatter / n): a new D x D matrix."""
        if self.scatter is None:
            raise RuntimeError("no images seen yet")
        return self.scatter / max(self.n_seen, 1)

    def shrinkage(self) -> float:
        """The OAS coefficient of ``covariance()`` (computed without materialising it)."""
        if self.scatter is None:
            raise RuntimeError("no images seen yet")
        n = max(self.n_seen, 1)
        sum_sq = 0.0
        for i in range(0, self.n_features, 1024):  # ||S||_F^2 by row blocks: no D x D temporary
            sum_sq += float(self.scatter[i:i + 1024].pow(2).sum())
        return oas_shrinkage(sum_sq / n**2, float(self.scatter.diagonal().sum()) / n, self.n_features, n)

    def shrunk_covariance(self) -> torch.Tensor:
        """(1 - rho) S + rho tr(S)/p I, the covariance LDA uses: a new D x D matrix."""
        rho = self.shrinkage()
        cov = self.scatter * ((1.0 - rho) / max(self.n_seen, 1))
        cov.diagonal().add_(rho * float(self.scatter.diagonal().sum()) / max(self.n_seen, 1) / self.n_features)
        return cov

    def _solve(self):
        import torch

        cls = self.classes
        if self._solution is not None and self._solution[0] == cls:
            return self._solution
        mu = self.means()
        cov = self.shrunk_covariance()
        if not float(cov.diagonal().sum()) > 0:  # one image per class: no spread at all; plain NCM
            cov = torch.eye(self.n_features, dtype=torch.float64, device=self.device)
        chol, info = torch.linalg.cholesky_ex(cov)
        del cov
        if int(info):  # numerically singular (rho ~ 0 with fewer samples than features): add a jitter
            cov = self.shrunk_covariance()
            cov.diagonal().add_(1e-10 * float(cov.diagonal().mean()))
            chol = torch.linalg.cholesky(cov)
            del cov
        v = torch.cholesky_solve(mu.T.contiguous(), chol)  # [D, K]
        del chol
        c = -0.5 * (mu * v.T).sum(1)
        self._solution = (cls, v, c)
        return self._solution

    def scores(self, x_BD: torch.Tensor) -> torch.Tensor:
        """[B, n_classes] float64 LDA discriminants for seen classes, -inf for the others."""
        import torch

        out = torch.full((len(x_BD), self.n_classes), float("-inf"), dtype=torch.float64, device=self.device)
        if self.n_seen:
            cls, v, c = self._solve()
            x = self._flat(x_BD)
            out[:, cls] = torch.cat([f @ v for f in self._chunks(x)]) + c
        return out.to(x_BD.device)

    def state_dict(self) -> dict:
        """Everything but the random embedding, which ``seed`` redraws."""
        return {"seed": self.seed, "gamma": self.gamma, "counts": self.counts.cpu(), "sums": self.sums.cpu(),
                "scatter": None if self.scatter is None else self.scatter.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"state was made with seed {state['seed']}, this model has seed {self.seed}")
        self.gamma, self._proj, self._phase, self._solution = state["gamma"], None, None, None
        self.counts = state["counts"].to(self.device)
        self.sums = state["sums"].to(self.device)
        self.scatter = None if state["scatter"] is None else state["scatter"].to(self.device)


@register("randumb", help="RanDumb: random Fourier features + streaming LDA with OAS shrinkage (Prabhu et al. 2024)",
          uses_training=("eval_mb_size",), cost=7)
def build_randumb(
    ctx: StrategyContext,
    *,
    # Embedding width. 10,000 is the default of the authors' code (src/main.py, --embed_dim);
    # the paper sweeps up to 25,000+. Memory grows with its square: see StreamingRFFLDA.
    n_features: PositiveInt = 10000,
    # RBF kernel exp(-gamma ||x - x'||^2) on pixels in [0, 1]. None: scikit-learn's gamma='scale',
    # 1 / (n_pixels * Var[pixels]), which the authors' code uses (RBFSampler(gamma='scale'), there
    # evaluated on the whole standardised training set; here on the first experience's images,
    # the only ones a class-incremental learner has then, and then frozen).
    gamma: PositiveFloat | None = None,
    chunk_size: PositiveInt = 1024,  # images per feature block: bounds the [chunk, n_features] temporaries
) -> StreamingRFFLDA:
    """RanDumb (Prabhu et al., NeurIPS 2024): random Fourier features of the flattened pixels
    (RBF kernel), then streaming LDA with an OAS-shrunk shared covariance; exact, no stored images.

    The embedding is drawn from a generator seeded with the run's seed. No checkpoints (the
    D x D scatter, 800 MB at the default width, would be written after every experience): an
    interrupted cell starts over. The protocol's backbone, optimizer and epochs are ignored.
    """
    c, h, w = ctx.image_shape
    return StreamingRFFLDA(ctx.n_classes, c * h * w, n_features=n_features, gamma=gamma, seed=ctx.seed,
                           chunk_size=chunk_size, device=ctx.device)
