"""Training utilities of the VAR model on real data (sklearn's 8x8 digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from varc.config import VARConfig
from varc.heads import NULL_CLASS
from varc.model import VARModel
from varc.train import (as_image_tensor, encode_dataset, evaluate_accuracy, predict, reconstruction_error,
                        shifted_copies, train_tokenizer, train_transformer, held_out_nll, KeepBest,
                        WeightAverage)
from varc.viz import make_grid, sample_grid, write_png


def small_config(**kw) -> VARConfig:
    base = dict(in_channels=1, image_size=8, downsample=1, tok_channels=8, latent_dim=8, vocab_size=32,
                patch_nums=(1, 2, 3, 4), width=32, depth=2, num_heads=2, head="lora:2")
    return VARConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = as_image_tensor((d.images * 16).clip(0, 255).astype(np.uint8))
    y = torch.as_tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1300]], y[perm[:1300]], x[perm[1300:]], y[perm[1300:]]


@pytest.fixture(scope="module")
def trained(digits):
    """A tokenizer + transformer trained jointly on all ten digits (a few seconds)."""
    x, y, _, _ = digits
    model = VARModel(small_config(), classes=range(10))
    untrained_error = reconstruction_error(model, x[:200])
    tok_hist = train_tokenizer(model, x, epochs=3, batch_size=32)
    model.freeze_tokenizer()
    tokens = encode_dataset(model, x)
    tr_hist = train_transformer(model, labels=y, tokens=tokens, epochs=3, batch_size=32, lr=3e-3)
    return model, untrained_error, tok_hist, tr_hist, tokens


def test_tokenizer_training_reconstructs_and_restarts_dead_codes(trained, digits) -> None:
    model, untrained_error, hist, _, _ = trained
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert {"recon_mse", "vq_loss", "code_usage", "perplexity", "restarts", "seconds"} <= set(hist[0])
    assert hist[-1]["recon_mse"] < hist[0]["recon_mse"]
    assert reconstruction_error(model, digits[2]) < untrained_error / 4
    # the codebook starts near zero, so most codes are dead at first and get restarted
    assert hist[0]["restarts"] > 0
    assert hist[-1]["code_usage"] > 0.5


def test_transformer_training_lowers_nll_and_classifies(trained, digits) -> None:
    model, _, _, hist, tokens = trained
    losses = [r["loss"] for r in hist]
    assert losses[-1] < losses[0]
    assert hist[0]["nll_per_image"] == pytest.approx(hist[0]["loss"] * model.seq_len)
    # a generative classifier far above chance (0.1) on held-out digits
    _, _, xt, yt = digits
    r = evaluate_accuracy(model, xt, yt, batch_size=100)
    assert r["n"] == len(yt) and r["images_per_s"] > 0
    assert r["accuracy"] > 0.6
    # predict returns the scores it took the argmax of, in the order of the classes asked for
    pred, scores = predict(model, xt[:20], classes=[7, 3, 1])
    assert scores.shape == (20, 3)
    assert torch.equal(pred, torch.tensor([7, 3, 1])[scores.argmax(1)])
    # training data are more likely under their own class than under the null class on average
    with torch.no_grad():
        own = model.class_log_likelihoods([t[:200] for t in tokens], list(range(10)))
    y = digits[1][:200]
    assert own[torch.arange(200), y].mean() > own.mean()


def test_transformer_training_is_deterministic_given_the_seed(digits) -> None:
    x, y, _, _ = digits
    base = VARModel(small_config(head="embedding", width=16, depth=1), classes=range(10))
    tokens = encode_dataset(base, x[:128])
    states = []
    for seed in (5, 5, 6):
        model = VARModel(small_config(head="embedding", width=16, depth=1), classes=range(10))
        train_transformer(model, labels=y[:128], tokens=tokens, epochs=1, batch_size=32, seed=seed)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_custom_loss_sees_label_dropout_and_progress_is_called(digits) -> None:
    x, y, _, _ = digits
    model = VARModel(small_config(head="embedding", width=16, depth=1), classes=range(10))
    seen: list[torch.Tensor] = []
    records: list[dict] = []

    def loss_fn(m: VARModel, tokens: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        seen.append(labels.clone())
        return -m.token_log_probs(tokens, labels).sum(1).mean()

    train_transformer(model, x[:256], y[:256], epochs=2, batch_size=64, label_drop=0.5, loss_fn=loss_fn,
                      progress=records.append)
    labels = torch.cat(seen)
    assert len(labels) == 512 and [r["epoch"] for r in records] == [1, 2]
    frac_null = (labels == NULL_CLASS).float().mean().item()
    assert 0.3 < frac_null < 0.7
    seen.clear()
    train_transformer(model, x[:64], y[:64], epochs=1, batch_size=64, label_drop=0.0, loss_fn=loss_fn)
    assert torch.equal(seen[0].sort().values, y[:64].sort().values)


def test_training_a_class_without_parameters_is_an_error(digits) -> None:
    x, y, _, _ = digits
    model = VARModel(small_config(), classes=[0, 1])
    with pytest.raises(ValueError, match="add_classes"):
        train_transformer(model, x[:10], y[:10], epochs=1)


def test_image_conversion_shapes() -> None:
    grey = np.zeros((3, 8, 8), np.uint8)
    grey[0, 1, 2] = 255
    t = as_image_tensor(grey)
    assert t.shape == (3, 1, 8, 8) and t.dtype == torch.float32 and t[0, 0, 1, 2] == 1.0
    colour = np.zeros((2, 8, 8, 3), np.uint8)
    colour[1, 2, 3, 1] = 51
    t = as_image_tensor(colour)
    assert t.shape == (2, 3, 8, 8) and t[1, 1, 2, 3] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        as_image_tensor(np.zeros((2, 8), np.uint8))


@pytest.mark.parametrize("channels,max_shift", [(1, 1), (3, 2)])
def test_shifted_copies_move_each_image_by_one_small_nonzero_offset(channels, max_shift) -> None:
    """Every copy is its source moved by some (dy, dx) != (0, 0) within max_shift, with the edge
    pixels repeated into the space it leaves (checked against index clamping, not padding)."""
    images = torch.rand(12, channels, 7, 9, generator=torch.Generator().manual_seed(1))
    out = shifted_copies(images, copies=2, max_shift=max_shift, seed=5)
    assert out.shape == (36, channels, 7, 9) and out.dtype == images.dtype
    assert torch.equal(out[:12], images)
    assert torch.equal(out, shifted_copies(images, copies=2, max_shift=max_shift, seed=5))
    assert not torch.equal(out, shifted_copies(images, copies=2, max_shift=max_shift, seed=6))
    rows, cols = torch.arange(7), torch.arange(9)
    seen = set()
    for k, copy in enumerate(out[12:]):
        src = images[k % 12]
        matches = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)
                   if torch.equal(copy, src[:, (rows - dy).clamp(0, 6)][:, :, (cols - dx).clamp(0, 8)])]
        assert len(matches) == 1 and matches[0] != (0, 0)
        seen.add(matches[0])
    assert len(seen) > 1  # offsets are drawn per image, not one per copy
    assert torch.equal(shifted_copies(images, copies=0, max_shift=1, seed=0), images)
    with pytest.raises(ValueError, match="max_shift >= 1, got 1 and 0"):
        shifted_copies(images, copies=1, max_shift=0, seed=0)


def test_weight_average_follows_the_moving_average_of_the_trajectory() -> None:
    """After steps with values w_1..w_T the average is a_t = d_t a_{t-1} + (1 - d_t) w_t from
    a_0 = the initial weights, with d_t = min(decay, (1 + t) / (10 + t)), t counted from 0; only
    the averaged parameters change when it is applied."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    other = torch.nn.Parameter(torch.tensor([5.0]))
    avg = WeightAverage([p], decay=0.5)
    expected = p.detach().clone()
    for t, value in enumerate([[3.0, 0.0], [-1.0, 4.0], [2.0, 2.0], [0.5, -0.5]]):
        with torch.no_grad():
            p.copy_(torch.tensor(value))
            other.add_(1.0)
        avg.update()
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * torch.tensor(value)
    avg.apply()
    assert torch.allclose(p.detach(), expected) and not torch.equal(p.detach(), torch.tensor([0.5, -0.5]))
    assert other.item() == 9.0
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage([p], decay=1.0)


def test_keep_best_restores_each_group_from_its_own_best_epoch() -> None:
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(1))
    keep = KeepBest({"a": [a], 7: [b]})
    for epoch, (loss_a, loss_b) in enumerate([(3.0, 1.0), (1.0, 2.0), (2.0, 0.5), (1.5, 0.7)], start=1):
        with torch.no_grad():
            a.fill_(epoch)
            b.fill_(10 * epoch)
        keep.observe({"a": loss_a, 7: loss_b})
    assert keep.restore() == {"a": 2, 7: 3}
    assert torch.equal(a.detach(), torch.full((2,), 2.0)) and b.item() == 30.0
    with pytest.raises(ValueError, match="groups"):
        keep.observe({"a": 1.0})


def test_heads_chosen_on_held_out_images_are_the_epochs_with_the_lowest_nll(digits) -> None:
    """Training heads with a KeepBest fed by held_out_nll after every epoch ends with each class's
    head at the epoch whose held-out NLL was lowest: the restored model's NLL is that minimum."""
    x_tr, y_tr, x_te, y_te = digits
    model = VARModel(small_config(), seed=0)
    train_tokenizer(model, x_tr, epochs=1, seed=0)
    model.add_classes([0, 1])
    keep_fit = torch.isin(y_tr, torch.tensor([0, 1]))
    keep_held = torch.isin(y_te, torch.tensor([0, 1]))
    tokens, held = encode_dataset(model, x_tr[keep_fit]), encode_dataset(model, x_te[keep_held])
    keep = KeepBest({c: model.class_parameters([c]) for c in (0, 1)})
    seen: list[dict] = []

    def on_epoch(_: dict) -> None:
        seen.append(held_out_nll(model, held, y_te[keep_held]))
        keep.observe(seen[-1])

    train_transformer(model, labels=y_tr[keep_fit], tokens=tokens, epochs=4, lr=2e-2, seed=0, progress=on_epoch)
    chosen = keep.restore()
    after = held_out_nll(model, held, y_te[keep_held])
    for c in (0, 1):
        best = min(range(4), key=lambda e: seen[e][c])
        assert chosen[c] == best + 1
        assert after[c] == pytest.approx(seen[best][c], rel=1e-6)


def test_png_grid_round_trip(tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 5, 4, generator=g)
    pixels = make_grid(images, nrow=3, padding=1)
    assert pixels.shape == (2 * 6 + 1, 3 * 5 + 1, 1)
    path = tmp_path / "grid.png"
    write_png(path, pixels, scale=2)
    back = np.asarray(Image.open(path))
    assert back.shape == (2 * 13, 2 * 16)
    assert np.array_equal(back[::2, ::2], pixels[:, :, 0])
    rgb = (np.arange(2 * 3 * 3) % 256).astype(np.uint8).reshape(2, 3, 3)
    write_png(tmp_path / "rgb.png", rgb)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)


def test_sample_grid_has_one_row_per_class(trained, tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image")
    model = trained[0]
    images = sample_grid(model, tmp_path / "s.png", classes=[1, 7], per_class=3, scale=1, seed=1)
    assert images.shape == (6, 1, 8, 8)
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (2 * 10 + 2, 3 * 10 + 2)


def test_default_parameters_respect_frozen_trunk(digits) -> None:
    x, y, _, _ = digits
    model = VARModel(small_config(head="lora:2", width=16, depth=1), classes=range(10))
    model.freeze_trunk()
    trunk_before = [p.clone() for p in model.trunk_parameters()]
    head_before = [p.clone() for p in model.class_parameters([y[0].item()])]
    train_transformer(model, x[:64], y[:64], epochs=1, batch_size=32)
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, model.trunk_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(head_before, model.class_parameters([y[0].item()])))


def test_cca_extra_negatives_push_the_pool_heads_down_on_them_and_touch_nothing_else(trained, digits):
    # CCA on classes 0 and 1; images of class 2 as extra negatives (what an old class's samples are)
    from varc.cca import cca_finetune

    model0 = trained[0]
    x, y, _, _ = digits
    pool_x, pool_y, neg_x = x[y <= 1][:200], y[y <= 1][:200], x[y == 2][:100]

    def finetuned(negatives: bool):
        model = VARModel(model0.config, classes=range(10))
        model.load_state_dict(model0.state_dict())
        model.freeze_tokenizer()
        others = {k: v.clone() for k, v in model.state_dict().items() if not any(f"sets.{c}." in k for c in (0, 1))}
        neg_tokens = encode_dataset(model, neg_x)
        cca_finetune(model, encode_dataset(model, pool_x), pool_y, params=model.class_parameters([0, 1]),
                     negative_pool=[0, 1], lr=1e-3, epochs=2, batch_size=32,
                     negatives=neg_tokens if negatives else None)
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in others.items())
        with torch.no_grad():
            return model.class_log_likelihoods(neg_x, [0, 1]).mean().item()

    with torch.no_grad():
        before = model0.class_log_likelihoods(neg_x, [0, 1]).mean().item()
    plain, with_negatives = finetuned(False), finetuned(True)
    assert with_negatives < plain and with_negatives < before - 1.0
