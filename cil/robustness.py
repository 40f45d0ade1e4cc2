"""Image corruptions for a robustness track, after MNIST-C (Mu & Gilmer 2019).

Fifteen corruptions, one function each, all with the signature

    fn(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray

``images`` is a float batch shaped [N, C, H, W] (C = 1 or 3, any H and W) with values in
[0, 1]; the result has the same shape, dtype float32 and values in [0, 1]. Severity 1..5
grows the corruption; severity 3 is MNIST-C's own setting (at 28x28), 1-2 are milder and
4-5 stronger; severity 0 returns the input unchanged (a float32 copy) for every corruption.
Lengths (blur sigmas, shifts, swap reach, line widths, zigzag teeth, fog and spatter scales)
are MNIST-C's pixel values times ``min(H, W) / 28``, so an 8x8 or a 32x32 image gets the same
corruption relative to its size; a few have a floor of about one pixel, below which they would
vanish (see docs/robustness.md). Angles, factors and intensities are not scaled.

    from cil.robustness import corrupt, corruption_names
    x_c = corrupt(x, "fog", severity=3, seed=0)   # deterministic for the seed

``corrupt`` draws from ``np.random.default_rng([seed, crc32(name)])``: the stream depends on
the seed and the corruption but not on the severity, and each function makes the same draws
at every severity, so severity changes only the strength (the same lines, angles and blobs,
drawn stronger). ``SCHEDULES[name]`` holds the five parameter settings; docs/robustness.md
says per corruption what MNIST-C does and where this module differs.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterable

import numpy as np
from scipy import ndimage

from cil.errors import UserError

SEVERITIES = (1, 2, 3, 4, 5)
MNIST_C_SEVERITY = 3  # the severity at which each corruption uses MNIST-C's setting
REFERENCE_SIZE = 28  # MNIST-C's image size; lengths are given for it and scaled by size / 28

# Per corruption, the parameters at severities 1..5 (index 2 = severity 3 = MNIST-C's).
SCHEDULES: dict[str, tuple] = {
    # photons per unit intensity: Poisson(x * lam) / lam
    "shot_noise": (12.0, 6.0, 3.0, 1.5, 0.75),
    # fraction of values replaced by 0 or 1 (half each)
    "impulse_noise": (0.05, 0.10, 0.17, 0.27, 0.40),
    # (Gaussian sigma px, max swap distance px, swap passes, swap probability per pixel visit)
    "glass_blur": ((0.5, 1, 2, 0.2), (0.6, 1, 2, 0.35), (0.7, 1, 2, 0.5), (0.8, 1, 3, 0.5), (0.9, 1, 4, 0.5)),
    # (radius px, sigma px) of ImageMagick-style one-sided motion blur; angle ~ U(-45, 45) deg
    "motion_blur": ((6, 1.5), (8, 2.0), (10, 3.0), (15, 5.0), (15, 8.0)),
    # shear angle in radians, random sign
    "shear": (0.2, 0.3, 0.4, 0.6, 0.8),
    # digit size factor (shrinks about the centre)
    "scale": (0.9, 0.8, 0.7, 0.6, 0.45),
    # rotation angle in radians, random sign
    "rotate": (0.2, 0.3, 0.4, 0.6, 0.8),
    # added to the HSV value channel
    "brightness": (0.2, 0.35, 0.5, 0.65, 0.8),
    # shift in px along each axis, random signs
    "translate": (1.0, 2.0, 3.0, 4.0, 5.0),
    # width of the inverted band at each side, as a fraction of the width
    "stripe": (0.1, 0.175, 0.25, 0.325, 0.4),
    # (fog strength, fractal decay: lower = rougher)
    "fog": ((1.5, 2.0), (2.0, 1.7), (3.0, 1.4), (4.0, 1.3), (5.5, 1.2)),
    # liquid threshold in standard deviations of the smoothed noise (lower = more mud)
    "spatter": (0.6, 0.3, 0.0, -0.3, -0.6),
    # (number of lines, opacity)
    "dotted_line": ((1, 0.5), (1, 0.75), (1, 1.0), (2, 1.0), (3, 1.0)),
    "zigzag": ((1, 0.5), (1, 0.75), (1, 1.0), (2, 1.0), (3, 1.0)),
    # (weight of the edge map in a blend with the image, outline thickening: none, plus or square)
    "canny_edges": ((1 / 3, None), (2 / 3, None), (1.0, None), (1.0, "plus"), (1.0, "square")),
}

# Which corruptions use the generator at all (the others ignore ``rng``).
STOCHASTIC = frozenset(SCHEDULES) - {"scale", "brightness", "stripe", "canny_edges"}

MUD_GRAY = 63 / 255  # MNIST-C's mud colour (grey images)
MUD_RGB = (63 / 255, 42 / 255, 20 / 255)  # ImageNet-C's mud brown (colour images)


class CorruptionError(UserError, ValueError):
    """An unknown corruption name, severity, seed or image batch (a ValueError and a UserError)."""


# ---------------------------------------------------------------------------------- helpers


def _check_severity(severity: object, name: str) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise CorruptionError(f"unknown severity {severity!r} for corruption {name!r}; choose one of 0, 1, 2, 3, 4, 5")
    return int(severity)


def _setup(images: np.ndarray, severity: int, name: str):
    """Validated float32 copy of the batch and the severity's parameters (None at severity 0)."""
    severity = _check_severity(severity, name)
    x = np.array(images, dtype=np.float32, copy=True)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise CorruptionError(f"images must be shaped [N, C, H, W] with C = 1 or 3, got shape {x.shape}")
    return x, (None if severity == 0 else SCHEDULES[name][severity - 1])


def _done(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def _size(x: np.ndarray) -> float:
    """Length scale of the batch relative to MNIST's 28 px."""
    return min(x.shape[2], x.shape[3]) / REFERENCE_SIZE


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over H and W only (edge pixels repeated, as skimage's default)."""
    if sigma <= 0:
        return x
    sig = (0,) * (x.ndim - 2) + (sigma, sigma)
    return ndimage.gaussian_filter(x, sig, mode="nearest")


def _affine(x: np.ndarray, mats: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Per-image inverse affine warp about the centre, bilinear, zeros outside.

    Output pixel p (row, col) takes the input at ``mats[n] @ (p - centre) + centre + shifts[n]``.
    """
    n, c, h, w = x.shape
    ctr = np.array([(h - 1) / 2, (w - 1) / 2])
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1) - ctr  # H, W, 2
    src = np.einsum("nij,hwj->nhwi", mats, grid) + ctr
    if shifts is not None:
        src = src + shifts[:, None, None, :]
    plane = np.broadcast_to(np.arange(n * c).reshape(n, c, 1, 1), (n, c, h, w))
    rows = np.broadcast_to(src[:, None, :, :, 0], (n, c, h, w))
    cols = np.broadcast_to(src[:, None, :, :, 1], (n, c, h, w))
    out = ndimage.map_coordinates(x.reshape(n * c, h, w), [plane, rows, cols], order=1, mode="constant", cval=0.0)
    return out.reshape(n, c, h, w)


def _random_signs(rng: np.random.Generator, shape) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def _line_profile(dist: np.ndarray, width: float) -> np.ndarray:
    """MNIST-C's line cross-section: 1 + log(1 - d / width), clipped to [0, 1]."""
    return np.clip(1.0 + np.log(np.clip(1.0 - dist / width, 1e-6, 1.0)), 0.0, 1.0)


def _polyline_distance(rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> np.ndarray:
    """Distance from every pixel to polylines with vertices (rows, cols) [N, K, V] -> [N, K, H, W]."""
    pr = np.arange(h, dtype=np.float32)[:, None]
    pc = np.arange(w, dtype=np.float32)[None, :]
    rows, cols = rows.astype(np.float32)[..., None, None], cols.astype(np.float32)[..., None, None]
    best = np.full(rows.shape[:2] + (h, w), np.inf, dtype=np.float32)
    for v in range(rows.shape[2] - 1):
        r0, c0 = rows[:, :, v], cols[:, :, v]
        vr, vc = rows[:, :, v + 1] - r0, cols[:, :, v + 1] - c0
        t = np.clip(((pr - r0) * vr + (pc - c0) * vc) / np.maximum(vr * vr + vc * vc, 1e-9), 0.0, 1.0)
        np.minimum(best, np.hypot(pr - r0 - t * vr, pc - c0 - t * vc), out=best)
    return best


def _line_width(size: float) -> float:
    """MNIST-C's 2.3 px line half-width, scaled, but never so thin that the line falls between pixels."""
    return max(2.3 * size, 1.5)


def _add_lines(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, count: int, opacity: float,
               dash: int = 0) -> np.ndarray:
    """Add the first ``count`` polylines (vertices [N, K, V]) to every channel; ``dash`` px on/off."""
    h, w = x.shape[2:]
    lines = _line_profile(_polyline_distance(rows[:, :count], cols[:, :count], h, w), _line_width(_size(x)))
    if dash:
        lines *= (np.arange(w) // dash) % 2 == 1  # MNIST-C: columns 0-1 off, 2-3 on, ...
    return x + opacity * lines.sum(1)[:, None]


def _value_noise(rng: np.random.Generator, n: int, h: int, w: int, step: float) -> np.ndarray:
    """Smooth random field in [0, 1]: uniform values on a lattice of ``step`` px, smoothstep-interpolated."""
    gh, gw = int(np.ceil(h / step)) + 2, int(np.ceil(w / step)) + 2
    lattice = rng.random((n, gh, gw), dtype=np.float32)
    phase = rng.random((n, 2))
    py = (np.arange(h)[None] + phase[:, :1] * step) / step  # N, H
    px = (np.arange(w)[None] + phase[:, 1:] * step) / step  # N, W
    iy, ix = np.floor(py).astype(int), np.floor(px).astype(int)
    fy, fx = py - iy, px - ix
    fy, fx = (fy * fy * (3 - 2 * fy))[:, :, None], (fx * fx * (3 - 2 * fx))[:, None, :]
    k = np.arange(n)[:, None, None]
    r0, r1, c0, c1 = iy[:, :, None], iy[:, :, None] + 1, ix[:, None, :], ix[:, None, :] + 1
    top = lattice[k, r0, c0] * (1 - fx) + lattice[k, r0, c1] * fx
    bottom = lattice[k, r1, c0] * (1 - fx) + lattice[k, r1, c1] * fx
    return top * (1 - fy) + bottom * fy


def _luminance(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, H, W] grey (Rec. 601 weights for colour)."""
    if x.shape[1] == 1:
        return x[:, 0]
    return np.tensordot(np.array([0.299, 0.587, 0.114], dtype=np.float32), x, axes=([0], [1]))


def canny(gray: np.ndarray, sigma: float, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """Canny edges of a batch [N, H, W] -> bool [N, H, W] (skimage's default thresholds).

    Gaussian smoothing, Sobel gradients, non-maximum suppression along the gradient direction
    quantised to 0/45/90/135 degrees, hysteresis: weak local maxima (> low) are kept when
    8-connected to a strong one (> high). The one-pixel border is never an edge.
    """
    sm = _blur(gray.astype(np.float64), sigma)
    # Sobel along H and W only (ndimage.sobel would also smooth across the batch axis)
    gy = ndimage.correlate1d(ndimage.correlate1d(sm, [-1, 0, 1], axis=1), [1, 2, 1], axis=2)
    gx = ndimage.correlate1d(ndimage.correlate1d(sm, [-1, 0, 1], axis=2), [1, 2, 1], axis=1)
    mag = np.hypot(gx, gy)
    pad = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    h, w = mag.shape[1:]

    def nb(dr: int, dc: int) -> np.ndarray:
        return pad[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    sector = np.round(np.mod(np.arctan2(gy, gx), np.pi) / (np.pi / 4)).astype(int) % 4
    # gradient along columns (0), down-right (1), rows (2), down-left (3); rows grow downwards
    steps = [(0, 1), (1, 1), (1, 0), (1, -1)]
    peak = np.zeros(mag.shape, dtype=bool)
    for k, (dr, dc) in enumerate(steps):
        peak |= (sector == k) & (mag >= nb(dr, dc)) & (mag >= nb(-dr, -dc))
    weak = peak & (mag > low)
    weak[:, [0, -1], :] = False
    weak[:, :, [0, -1]] = False
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, count = ndimage.label(weak, structure=structure)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[weak & (mag > high)]] = True
    keep[0] = False
    return keep[labels]


# ------------------------------------------------------------------------------ corruptions


def shot_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson (photon) noise: Poisson(x * lam) / lam, per value."""
    x, lam = _setup(images, severity, "shot_noise")
    if lam is None:
        return x
    return _done(rng.poisson(x.astype(np.float64) * lam) / lam)


def impulse_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: a fraction of the values set to 0 or 1 (half each)."""
    x, amount = _setup(images, severity, "impulse_noise")
    if amount is None:
        return x
    u = rng.random((2,) + x.shape, dtype=np.float32)
    return _done(np.where(u[0] < amount, (u[1] < 0.5).astype(np.float32), x))


def glass_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, swap pixels with random nearby ones (scanning bottom-right to top-left), blur again."""
    x, p = _setup(images, severity, "glass_blur")
    if p is None:
        return x
    sigma, delta, passes, prob = p
    s = _size(x)
    d = max(1, int(round(delta * s)))
    prob *= min(1.0, delta * s)  # below one pixel of reach, swap less often instead
    n, _, h, w = x.shape
    x = np.ascontiguousarray(_blur(x, sigma * s).transpose(0, 2, 3, 1))  # N, H, W, C: a pixel is one row
    idx = np.arange(n)
    for _ in range(passes):
        for r in range(h - 1, -1, -1):
            u = rng.random((w, 3, n))  # per column: swap?, row offset, column offset
            for c in range(w - 1, -1, -1):
                m = u[c, 0] < prob
                if not m.any():
                    continue
                k = idx[m]
                r2 = np.clip(r + np.floor(u[c, 1, m] * (2 * d + 1)).astype(int) - d, 0, h - 1)
                c2 = np.clip(c + np.floor(u[c, 2, m] * (2 * d + 1)).astype(int) - d, 0, w - 1)
                here = x[k, r, c].copy()
                x[k, r, c] = x[k, r2, c2]
                x[k, r2, c2] = here
    return _done(_blur(x.transpose(0, 3, 1, 2), sigma * s))


def motion_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One-sided Gaussian streak along a random angle in [-45, 45] degrees (ImageMagick's kernel, bilinear taps)."""
    x, p = _setup(images, severity, "motion_blur")
    angle = np.deg2rad(rng.uniform(-45.0, 45.0, size=len(x)))
    if p is None:
        return x
    radius, sigma = p[0] * _size(x), p[1] * _size(x)
    taps = np.arange(int(np.ceil(2 * radius)) + 1)
    weight = np.exp(-(taps**2) / (2 * sigma**2))
    weight /= weight.sum()
    fr = taps[None] * np.sin(angle)[:, None]  # N, T: sub-pixel offsets, sampled bilinearly
    fc = taps[None] * np.cos(angle)[:, None]
    r0, c0 = np.floor(fr).astype(int), np.floor(fc).astype(int)
    wr, wc = (fr - r0).astype(np.float32), (fc - c0).astype(np.float32)
    n, _, h, w = x.shape
    pad = int(taps[-1]) + 1
    xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    k, rows, cols = np.arange(n)[:, None, None], np.arange(h)[None, :, None] + pad, np.arange(w)[None, None, :] + pad
    out = np.zeros((n, h, w, x.shape[1]), dtype=np.float32)
    for t in np.flatnonzero(weight > 1e-4):
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            share = (wr[:, t] if dr else 1 - wr[:, t]) * (wc[:, t] if dc else 1 - wc[:, t]) * weight[t]
            src = xp[k, rows + (r0[:, t] + dr)[:, None, None], cols + (c0[:, t] + dc)[:, None, None]]
            out += share[:, None, None, None] * src
    return _done(out.transpose(0, 3, 1, 2))


def _signed_angles(images: np.ndarray, severity: int, rng: np.random.Generator, name: str):
    """:func:`_setup` with the severity's angle given a random sign per image (None at severity
    0; the signs are drawn either way, so the generator moves on alike)."""
    x, a = _setup(images, severity, name)
    sign = _random_signs(rng, len(x))
    return x, (None if a is None else a * sign)


def shear(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Affine shear about the centre (skimage's 2019 shear matrix), random direction."""
    x, a = _signed_angles(images, severity, rng, "shear")
    if a is None:
        return x
    zero = np.zeros_like(a)
    # (x, y) map [[1, -sin a], [0, cos a]] written for (row, col) = (y, x)
    mats = np.stack([np.stack([np.cos(a), zero], -1), np.stack([-np.sin(a), np.ones_like(a)], -1)], 1)
    return _done(_affine(x, mats))


def scale(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Shrink the image about its centre by a fixed factor (zeros come in at the border)."""
    x, f = _setup(images, severity, "scale")
    if f is None:
        return x
    return _done(_affine(x, np.broadcast_to(np.eye(2) / f, (len(x), 2, 2))))


def rotate(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Rotate about the centre by a fixed angle, random direction."""
    x, a = _signed_angles(images, severity, rng, "rotate")
    if a is None:
        return x
    cos, sin = np.cos(a), np.sin(a)
    mats = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)
    return _done(_affine(x, mats))


def brightness(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add to the HSV value channel (grey: x + c), keeping hue and saturation."""
    x, c = _setup(images, severity, "brightness")
    if c is None:
        return x
    v = x.max(axis=1, keepdims=True)
    v_new = np.minimum(v + c, 1.0)
    return _done(np.where(v > 0, x * (v_new / np.maximum(v, 1e-12)), v_new))


def translate(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Shift by the same distance along both axes, random signs (zeros come in)."""
    x, d = _setup(images, severity, "translate")
    signs = _random_signs(rng, (len(x), 2))
    if d is None:
        return x
    return _done(_affine(x, np.broadcast_to(np.eye(2), (len(x), 2, 2)), signs * d * _size(x)))


def stripe(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Invert a vertical band at the left and at the right edge (partial inversion at a band's edge)."""
    x, frac = _setup(images, severity, "stripe")
    if frac is None:
        return x
    w = x.shape[3]
    col = np.arange(w)
    cover = np.maximum(np.clip(frac * w - col, 0, 1), np.clip(frac * w - (w - 1 - col), 0, 1))
    return _done(x + cover.astype(np.float32) * (1 - 2 * x))


def fog(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add a fractal cloud layer, then rescale so the image maximum stays where it was."""
    x, p = _setup(images, severity, "fog")
    n, _, h, w = x.shape
    s = _size(x)
    # octaves of 256, 128, ..., 2 px (at 28 px), coarsest first, as in a 256x256 plasma map
    layers = [_value_noise(rng, n, h, w, 2.0**k * s) for k in range(8, 0, -1)]
    if p is None:
        return x
    strength, decay = p
    amp = decay ** -np.arange(8.0)
    cloud = sum(a * layer for a, layer in zip(amp, layers)) / amp.sum()
    cloud = 0.5 + 2.0 * (cloud - 0.5)  # spread as in a 28 px crop of MNIST-C's normalised plasma map
    top = x.max(axis=(1, 2, 3), keepdims=True)
    return _done((x + strength * np.clip(cloud, 0, 1)[:, None]) * top / (top + strength))


def spatter(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Mud blobs: thresholded smooth noise, its mask blurred and cut at 0.8, blended in mud colour."""
    x, z = _setup(images, severity, "spatter")
    n, c, h, w = x.shape
    s1, s2 = 1.0 * _size(x), 1.5 * _size(x)
    noise = _blur(rng.standard_normal((n, h, w), dtype=np.float32), s1)
    if z is None:
        return x
    delta = np.zeros((2 * int(np.ceil(4 * s1)) + 3,) * 2)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1
    std = np.sqrt((_blur(delta, s1) ** 2).sum())  # std of Gaussian-smoothed unit white noise
    m = _blur((noise / std > z).astype(np.float32), s2)
    m[m < 0.8] = 0
    mud = np.array(MUD_GRAY if c == 1 else MUD_RGB, dtype=np.float32).reshape(1, c, 1, 1)
    return _done(x * (1 - m[:, None]) + mud * m[:, None])


def dotted_line(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add dashed lines running from the left edge to the right edge at random heights."""
    x, p = _setup(images, severity, "dotted_line")
    n, _, h, w = x.shape
    rows = rng.uniform(0, h - 1, size=(n, 3, 2))
    if p is None:
        return x
    cols = np.broadcast_to(np.array([0.0, w - 1]), (n, 3, 2))
    return _done(_add_lines(x, rows, cols, *p, dash=max(1, int(round(2 * _size(x))))))


def zigzag(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add zigzag lines (45-degree teeth) across the image along a random, slightly tilted axis."""
    x, p = _setup(images, severity, "zigzag")
    n, _, h, w = x.shape
    s = _size(x)
    r0 = rng.uniform(0, h - 1, size=(n, 3))
    r1 = r0 + rng.uniform(-5, 5, size=(n, 3)) * s
    if p is None:
        return x
    c0, c1 = 2 * (w - 1) / 27, 25 * (w - 1) / 27
    a = b = max(2.0 * s, 1.0)  # tooth half-length along the axis and tooth height
    theta = np.arctan2(r1 - r0, c1 - c0)
    length = (c1 - c0) / np.cos(theta)  # N, 3
    n_teeth = int(np.ceil((length.max() - a) / (2 * a))) + 1
    t = np.minimum(np.concatenate([[0.0], (2 * np.arange(n_teeth) + 1) * a])[None, None], length[..., None])
    off = np.concatenate([[0.0], b * (-1.0) ** np.arange(n_teeth)])[None, None] * (t < length[..., None])
    rows = r0[..., None] + t * np.sin(theta)[..., None] + off * np.cos(theta)[..., None]
    cols = c0 + t * np.cos(theta)[..., None] - off * np.sin(theta)[..., None]
    return _done(_add_lines(x, rows, cols, *p))


def canny_edges(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Replace the image by its Canny edge map (white edges on black); mild severities blend."""
    x, p = _setup(images, severity, "canny_edges")
    if p is None:
        return x
    weight, thicken = p
    edges = canny(_luminance(x), 1.0 * _size(x))
    if thicken is not None:
        footprint = np.zeros((3, 3, 3), dtype=bool)
        footprint[1] = ndimage.generate_binary_structure(2, 1 if thicken == "plus" else 2)
        grown = ndimage.binary_dilation(edges, footprint, iterations=max(1, int(round(_size(x)))))
        edges |= grown & (_luminance(x) < 0.5)  # thicken outwards, into the background only
    return _done((1 - weight) * x + weight * edges.astype(np.float32)[:, None])


# ---------------------------------------------------------------------------------- registry

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "brightness": brightness,
    "translate": translate,
    "stripe": stripe,
    "fog": fog,
    "spatter": spatter,
    "dotted_line": dotted_line,
    "zigzag": zigzag,
    "canny_edges": canny_edges,
}


def corruption_names() -> list[str]:
    """The corruptions in MNIST-C's order."""
    return list(CORRUPTIONS)


def _unknown(name: object) -> CorruptionError:
    return CorruptionError(f"unknown corruption {name!r}; choose one of: {', '.join(CORRUPTIONS)} (or 'all')")


def expand_corruptions(names: str | Iterable[str]) -> list[str]:
    """``"all"`` -> every name; ``"fog,zigzag"`` or a list -> those names, validated, duplicates dropped."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        for name in corruption_names() if item == "all" else [item]:
            if name not in CORRUPTIONS:
                raise _unknown(name)
            if name not in out:
                out.append(name)
    if not out:
        raise CorruptionError(f"no corruption named in {names!r}; choose from: {', '.join(CORRUPTIONS)} (or 'all')")
    return out


def corruption_seed(name: str) -> int:
    """The stable per-corruption sub-seed (CRC-32 of the name), mixed with the user's seed."""
    return zlib.crc32(name.encode("utf-8"))


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (0..5) with a generator built from ``seed``."""
    if name not in CORRUPTIONS:
        raise _unknown(name)
    _check_severity(severity, name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CorruptionError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), corruption_seed(name)])
    return CORRUPTIONS[name](images, severity, rng)


__all__ = [
    "CORRUPTIONS",
    "SCHEDULES",
    "SEVERITIES",
    "STOCHASTIC",
    "CorruptionError",
    "canny",
    "corrupt",
    "corruption_names",
    "corruption_seed",
    "expand_corruptions",
    *CORRUPTIONS,
]
