"""RanDumb, nearest class mean and the per-class-VAE generative classifier: their cores against
independent batch computations, the VAE classifier's isolation and its importance-sampling
estimator against an exact likelihood, and all three on a small real stream."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cil.data import ImageDataset, load_dataset
from cil import testing
from cil.errors import UserError
from cil.strategies import registry
from cil.strategies.ncm import StreamingNCM
from cil.strategies.randumb import StreamingRFFLDA
from cil.strategies.registry import StrategyContext
from cil.strategies.vae_gc import PerClassVAEClassifier, importance_log_likelihood

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified:UserWarning")

N_CLASSES = 6  # digits 0..5, three experiences of two classes

# Small settings: each strategy trains and evaluates the stream in about a second.
SMALL = {
    "ncm": {},
    "randumb": {"n_features": 512},
    "vae_gc": {"iterations": 150, "importance_samples": 20},
}


@pytest.fixture(scope="module")
def digits6() -> ImageDataset:
    """Digits 0..5 of scikit-learn's 8x8 digits (train and test splits of those classes)."""
    ds = load_dataset("digits")
    train, test = ds.y_train < N_CLASSES, ds.y_test < N_CLASSES
    return ImageDataset(name="digits6", x_train=ds.x_train[train], y_train=ds.y_train[train],
                        x_test=ds.x_test[test], y_test=ds.y_test[test], class_names=ds.class_names[:N_CLASSES])


def _pixels(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 images -> float [N, 1, H, W] in [0, 1], as the streams give them."""
    return torch.from_numpy(x_uint8).float().div(255.0).unsqueeze(1)


def _stream(ds: ImageDataset):
    return testing.tiny_stream(dataset=ds)


def _context(ds: ImageDataset, **overrides) -> StrategyContext:
    return testing.context(ds, **{"train_mb_size": 16, "eval_mb_size": 256, **overrides})


def _train_eval(strategy, stream) -> list[list[float]]:
    """Accuracy matrix R[i][j]: test experience j after training experience i."""
    rows = []
    for exp in stream.benchmark.train_stream:
        strategy.train(exp)
        metrics = strategy.eval(stream.benchmark.test_stream)
        row = []
        for j in range(stream.n_experiences):
            (key,) = [k for k in metrics if k.startswith("Top1_Acc_Exp/") and k.endswith(f"Exp{j:03d}")]
            row.append(float(metrics[key]))
        rows.append(row)
    return rows


# -- RanDumb ---------------------------------------------------------------------------------------

def _uneven_batches(y: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Indices in three uneven shuffled parts, so classes recur across updates (Chan et al. merges)."""
    idx = np.random.RandomState(seed).permutation(len(y))
    return np.split(idx, [len(y) // 5, len(y) // 2])


def test_streaming_rff_lda_equals_batch_lda(digits6):
    from sklearn.covariance import OAS

    keep = digits6.y_train < 5  # class 5 never seen: its scores must stay -inf
    x, y = _pixels(digits6.x_train[keep]), digits6.y_train[keep]
    core = StreamingRFFLDA(N_CLASSES, 64, n_features=48, gamma=0.05, seed=3, chunk_size=37)
    for part in _uneven_batches(y):
        core.update(x[part], torch.as_tensor(y[part]))

    # The batch reference, computed independently with numpy / scikit-learn on the same features.
    F = core.features(x).numpy()
    classes = np.unique(y)
    means = np.stack([F[y == c].mean(0) for c in classes])
    centered = F - means[np.searchsorted(classes, y)]
    cov = np.cov(centered.T, bias=True)  # pooled within-class covariance, maximum likelihood
    oas = OAS(assume_centered=True).fit(centered)

    assert core.classes == classes.tolist()
    np.testing.assert_allclose(core.means().numpy(), means, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(core.covariance().numpy(), cov, rtol=1e-9, atol=1e-14)
    assert core.shrinkage() == pytest.approx(oas.shrinkage_, rel=1e-9)
    assert 0.0 < core.shrinkage() < 1.0
    np.testing.assert_allclose(core.shrunk_covariance().numpy(), oas.covariance_, rtol=1e-9, atol=1e-14)

    F_test = core.features(_pixels(digits6.x_test)).numpy()
    v = np.linalg.solve(oas.covariance_, means.T)
    reference = F_test @ v - 0.5 * (means * v.T).sum(1)
    scores = core.scores(_pixels(digits6.x_test)).numpy()
    np.testing.assert_allclose(scores[:, classes], reference, rtol=1e-8, atol=1e-8)
    assert np.isneginf(scores[:, 5]).all()
    np.testing.assert_array_equal(scores.argmax(1), classes[reference.argmax(1)])


def test_rff_features_are_seeded_and_approximate_the_rbf_kernel(digits6):
    x = _pixels(digits6.x_train[:6])
    a = StreamingRFFLDA(N_CLASSES, 64, n_features=20000, gamma=0.05, seed=0)
    assert torch.equal(a.features(x), StreamingRFFLDA(N_CLASSES, 64, n_features=20000, gamma=0.05, seed=0).features(x))
    assert not torch.equal(a.features(x), StreamingRFFLDA(N_CLASSES, 64, n_features=20000, gamma=0.05, seed=1).features(x))
    z = a.features(x)
    flat = x.flatten(1).double()
    kernel = torch.exp(-0.05 * torch.cdist(flat, flat).pow(2))
    assert (z @ z.T - kernel).abs().max() < 0.05  # Monte Carlo error ~ 1/sqrt(D)


def test_rff_gamma_defaults_to_the_scale_rule_on_the_first_update(digits6):
    x = _pixels(digits6.x_train[:100])
    core = StreamingRFFLDA(N_CLASSES, 64, n_features=16, seed=0)
    core.update(x, torch.as_tensor(digits6.y_train[:100]))
    assert core.gamma == pytest.approx(1.0 / (64 * float(x.double().var(unbiased=False))))
    first = core.gamma
    core.update(_pixels(digits6.x_train[100:200]), torch.as_tensor(digits6.y_train[100:200]))
    assert core.gamma == first  # the embedding is fixed after the first experience


# -- nearest class mean ----------------------------------------------------------------------------

def test_streaming_ncm_equals_batch_means(digits6):
    keep = digits6.y_train != 2
    x, y = _pixels(digits6.x_train[keep]), digits6.y_train[keep]
    core = StreamingNCM(N_CLASSES)
    for part in _uneven_batches(y, seed=1):
        core.update(x[part], torch.as_tensor(y[part]))
    flat = x.flatten(1).double().numpy()
    classes = np.unique(y)
    means = np.stack([flat[y == c].mean(0) for c in classes])
    np.testing.assert_allclose(core.means().numpy(), means, rtol=1e-12, atol=1e-14)

    test = _pixels(digits6.x_test)
    scores = core.scores(test).numpy()
    dist2 = ((test.flatten(1).double().numpy()[:, None, :] - means[None]) ** 2).sum(-1)
    np.testing.assert_allclose(scores[:, classes], -dist2, rtol=1e-10, atol=1e-10)
    assert np.isneginf(scores[:, 2]).all()


# -- the importance-sampling estimator -------------------------------------------------------------

def _linear_gaussian(A: torch.Tensor, b: torch.Tensor, s: float):
    """p(z) = N(0, I), p(x|z) = N(Az + b, s^2 I): the decoder log-likelihood, the exact posterior
    N(m(x), P^-1) with P = I + A^T A / s^2, and the exact marginal N(b, A A^T + s^2 I)."""
    d, k = A.shape
    P = torch.eye(k, dtype=A.dtype) + A.T @ A / s**2
    P_inv = torch.linalg.inv(P)

    def log_px_given_z(x_BD, z_BSZ):
        r = x_BD[:, None, :] - (z_BSZ @ A.T + b)
        return -0.5 * (r.pow(2).sum(-1) / s**2 + d * math.log(2 * math.pi * s**2))

    def posterior_mean(x_BD):
        return (x_BD - b) @ A @ P_inv.T / s**2

    marginal = torch.distributions.MultivariateNormal(b, A @ A.T + s**2 * torch.eye(d, dtype=A.dtype))
    return log_px_given_z, posterior_mean, P_inv, marginal


def test_importance_sampling_is_exact_with_the_true_posterior():
    """With q(z|x) the exact posterior, every importance weight equals p(x): any S gives log p(x)."""
    A = torch.tensor([[2.0, 0.0], [0.0, 0.5], [0.0, 0.0]], dtype=torch.float64)  # orthogonal columns:
    b = torch.tensor([0.3, -1.0, 0.2], dtype=torch.float64)  # the posterior covariance is diagonal
    log_px_given_z, post_mean, P_inv, marginal = _linear_gaussian(A, b, s=0.7)
    x = torch.tensor([[1.0, 0.0, 0.5], [-2.0, 1.0, 0.0]], dtype=torch.float64)
    logvar = torch.log(torch.diagonal(P_inv)).expand(len(x), -1)
    est = importance_log_likelihood(x, lambda x: (post_mean(x), logvar), log_px_given_z, 3,
                                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(est, marginal.log_prob(x), rtol=0, atol=1e-10)


def test_importance_sampling_converges_to_the_exact_marginal():
    """A posterior-ish proposal (diagonal, widened, shifted): within 0.05 nats with 20,000 samples,
    and a single sample is clearly worse (the estimator really averages)."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 2, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    log_px_given_z, post_mean, P_inv, marginal = _linear_gaussian(A, b, s=0.8)
    x = marginal.sample((5,))
    logvar = torch.log(1.5 * torch.diagonal(P_inv)).expand(len(x), -1)

    def encode(x_BD):
        return post_mean(x_BD) + 0.2, logvar

    exact = marginal.log_prob(x)
    est = importance_log_likelihood(x, encode, log_px_given_z, 20000, generator=torch.Generator().manual_seed(1),
                                    max_rows=4096)  # several sample blocks
    assert (est - exact).abs().max() < 0.05
    one = torch.stack([importance_log_likelihood(x, encode, log_px_given_z, 1, generator=torch.Generator().manual_seed(i))
                       for i in range(20)])
    assert (one - exact).abs().mean() > 3 * (est - exact).abs().mean()


# -- the per-class VAE classifier ------------------------------------------------------------------

def _snapshot(core: PerClassVAEClassifier) -> dict:
    return {c: {k: v.clone() for k, v in core.vaes[str(c)].state_dict().items()} for c in core.classes}


def test_vae_gc_never_changes_an_earlier_class(digits6):
    torch.manual_seed(0)
    strategy = registry.build("vae_gc", _context(digits6), {"iterations": 30, "importance_samples": 5})
    core = strategy.classifier
    snapshots = []
    for exp in _stream(digits6).benchmark.train_stream:
        strategy.train(exp)
        snapshots.append(_snapshot(core))
    assert core.classes == list(range(N_CLASSES))
    for earlier in snapshots[:-1]:
        for c, state in earlier.items():
            now = core.vaes[str(c)].state_dict()
            assert state.keys() == now.keys()
            for key, value in state.items():
                assert torch.equal(value, now[key]), f"class {c}: {key} changed after a later experience"
    # Each class's VAE is a separate module with its own parameters.
    ids = [{id(p) for p in core.vaes[str(c)].parameters()} for c in core.classes]
    assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1:])


def test_vae_gc_scores_are_deterministic_and_leave_the_global_rng_alone(digits6):
    core = PerClassVAEClassifier(N_CLASSES, 64, hidden=[16], latent_dim=2, iterations=10, importance_samples=7)
    core.update(_pixels(digits6.x_train[:200]), torch.as_tensor(digits6.y_train[:200]))
    x = _pixels(digits6.x_test[:20])
    state = torch.get_rng_state()
    first = core.scores(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, core.scores(x))
    assert torch.isfinite(first).all()  # digits 0..5 are all among the first 200 images


def test_vae_gc_remembers_old_classes_estimates_bit_for_bit(digits6):
    """After each experience the scores equal a fresh estimate under every class's VAE, bit for
    bit, and only the new classes are estimated; the same images in another place of a batch
    (other importance noise) are estimated afresh; a checkpoint carries what was estimated."""
    core = PerClassVAEClassifier(N_CLASSES, 64, hidden=[16], latent_dim=2, iterations=10, importance_samples=7)
    x = _pixels(digits6.x_test[:40])
    estimated, estimate = [], core._class_log_likelihood
    core._class_log_likelihood = lambda c, xb: estimated.append(c) or estimate(c, xb)
    y = torch.as_tensor(digits6.y_train)
    for k, pair in enumerate(((0, 1), (2, 3), (4, 5))):
        sel = (y == pair[0]) | (y == pair[1])
        core.update(_pixels(digits6.x_train[sel.numpy()]), y[sel])
        estimated.clear()
        got = core.scores(x)
        assert estimated == list(pair)  # the earlier classes come from the memo
        fresh = torch.stack([estimate(c, core._flat(x)) for c in core.classes], dim=1)
        assert torch.equal(got[:, core.classes], fresh)
        assert torch.isinf(got[:, 2 * (k + 1):]).all()
    estimated.clear()
    shifted = core.scores(x[5:25])  # new places in a new batch size: new noise, so new estimates
    assert estimated == core.classes
    assert torch.equal(shifted, torch.stack([estimate(c, core._flat(x[5:25])) for c in core.classes], dim=1))
    assert not torch.equal(shifted, got[5:25])  # and the check can fail
    restored = PerClassVAEClassifier(N_CLASSES, 64, hidden=[16], latent_dim=2, iterations=10, importance_samples=7)
    restored.load_state_dict(core.state_dict())
    calls = []
    restored._class_log_likelihood = lambda c, xb: calls.append(c)
    assert torch.equal(restored.scores(x), got) and calls == []


def test_checkpoints_restore_the_same_scores(digits6):
    stream = _stream(digits6)
    x = _pixels(digits6.x_test[:30])
    for name, params in (("vae_gc", {"iterations": 10, "importance_samples": 4}), ("ncm", {})):
        strategy = registry.build(name, _context(digits6), params)
        strategy.train(stream.benchmark.train_stream[0])
        restored = registry.build(name, _context(digits6), params)
        restored.load_checkpoint_state(strategy.checkpoint_state())
        assert torch.equal(strategy.classifier.scores(x), restored.classifier.scores(x)), name
    # RanDumb keeps a D x D scatter: no checkpoints, so the runner never writes it.
    randumb = registry.build("randumb", _context(digits6), {"n_features": 8})
    assert not hasattr(randumb, "checkpoint_state")


# -- the strategies on a real stream ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SMALL))
def test_strategy_learns_the_stream_without_forgetting_much(name, digits6):
    torch.manual_seed(0)
    strategy = registry.build(name, _context(digits6), SMALL[name])
    R = _train_eval(strategy, _stream(digits6))
    assert len(R) == 3
    for i, row in enumerate(R):
        assert all(0.0 <= a <= 1.0 for a in row)
        assert all(a == 0.0 for a in row[i + 1:]), f"{name}: unseen classes were predicted"
    # Six classes, chance 1/6: every experience is still recognised at the end of the stream.
    final = R[-1]
    assert min(final) > 0.5, f"{name}: final accuracies {final}"
    assert np.mean(final) > 0.85, f"{name}: final accuracies {final}"


@pytest.mark.parametrize("name, params, key", [
    ("randumb", {"n_features": 0}, "strategies.randumb.n_features"),
    ("randumb", {"gamma": 0.0}, "strategies.randumb.gamma"),
    ("randumb", {"chunk_size": 0}, "strategies.randumb.chunk_size"),
    ("vae_gc", {"importance_samples": 0}, "strategies.vae_gc.importance_samples"),
    ("vae_gc", {"hidden": []}, "strategies.vae_gc.hidden"),
    ("vae_gc", {"hidden": [85, 0]}, "strategies.vae_gc.hidden"),
    ("vae_gc", {"latent_dim": 0}, "strategies.vae_gc.latent_dim"),
    ("vae_gc", {"iterations": 0}, "strategies.vae_gc.iterations"),
    ("vae_gc", {"vae_lr": 0.0}, "strategies.vae_gc.vae_lr"),
])
def test_builders_reject_meaningless_values(name, params, key, digits6):
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as exc:
        registry.build(name, _context(digits6), params)
    assert "\n" not in str(exc.value)


def test_registered_with_docstrings_citing_their_papers():
    for name in SMALL:
        spec = registry.get(name)
        assert spec.help and spec.module == f"cil.strategies.{name}"
        first = (spec.builder.__doc__ or "").strip().splitlines()[0]
        assert any(str(year) in first for year in range(2000, 2030)), first
