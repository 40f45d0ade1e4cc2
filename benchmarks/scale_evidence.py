"""Which scales carry class evidence, and does normalising each class's score help?

    python benchmarks/scale_evidence.py results/split_fashion_mnist/varc/seed0_natural/model.pt \
        --protocol split_fashion_mnist --limit 2000 --per-class 300

Two scoring levers of the method issue, measured on a trained VAR classifier (the cell's
``model.pt``) and the same fixed test images its inference report timed (``--protocol``):

- **scales**: accuracy of argmax log p(x | y) summed over the first k scales, and over scale k
  alone, for every k: where in the coarse-to-fine sequence the classes separate.
- **own-class normalisation**: each class's score shifted (``centred``: minus the mean) or
  standardised (``z``: minus the mean, over the standard deviation) by the log-likelihoods its
  own head gives ``--per-class`` of its own training images. This uses no other class's
  images, so it is fair in class-incremental learning without replay. The heads were trained
  on those images, so the statistics are in-sample; held-out images would need heads trained
  without them.

It also prints plain scoring's accuracy on each class's test images (where the errors are), and
each class's mean log-likelihood under its own head on its training images and on its test
images: how far each head's density generalises beyond the images it was fitted to.
It measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cil.config import load_protocol
from cil.data import load_dataset
from cil.strategies.generative import report_order
from pruning_sweep import test_set
from varc.explain import scale_log_likelihoods
from varc.model import VARModel
from varc.train import as_image_tensor


def per_scale_log_likelihoods(model: VARModel, images: torch.Tensor, classes: list[int], batch: int) -> torch.Tensor:
    """log p(x | y) of every image under every class, scale by scale: [B, C, K], ``batch`` images at a time."""
    with torch.no_grad():
        return scale_log_likelihoods(model.class_token_log_probs(images, classes, batch_size=batch), model.scale_ends)


def scale_accuracies(ll_BCK: torch.Tensor, target_B: torch.Tensor) -> list[tuple[float, float]]:
    """(accuracy from the first k scales, accuracy from scale k alone) for k = 1..K."""
    cum_BCK = ll_BCK.cumsum(-1)
    return [((cum_BCK[..., k].argmax(1) == target_B).float().mean().item(),
             (ll_BCK[..., k].argmax(1) == target_B).float().mean().item()) for k in range(ll_BCK.shape[-1])]


def own_class_statistics(model: VARModel, classes: list[int], x_train: np.ndarray, y_train: np.ndarray,
                         per_class: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation [C] of log p(x | c) over ``per_class`` of class c's own training
    images, under class c's head only."""
    rng = np.random.default_rng(seed)
    means, stds = [], []
    for c in classes:
        idx = np.flatnonzero(y_train == c)
        idx = rng.choice(idx, min(per_class, len(idx)), replace=False)
        ll_B = per_scale_log_likelihoods(model, as_image_tensor(x_train[idx]), [c], batch)[:, 0].sum(-1)
        means.append(ll_B.mean())
        stds.append(ll_B.std())
    return torch.stack(means), torch.stack(stds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--protocol", default=None, help="test images in this protocol's stream order (its report's)")
    ap.add_argument("--dataset", default="mnist", help="without --protocol: test images in the dataset's order")
    ap.add_argument("--limit", type=int, default=2000, help="test images (the fixed random subset the report timed)")
    ap.add_argument("--per-class", type=int, default=300, help="own training images per class for the statistics")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.limit < 1 or args.per_class < 2:
        raise SystemExit("--limit must be at least 1 and --per-class at least 2 (a standard deviation needs two)")
    torch.set_num_threads(args.threads)
    model = VARModel.load(args.checkpoint, device="cpu")
    classes = [int(c) for c in model.classes]
    images, labels, source = test_set(args.protocol, args.dataset)
    keep = report_order(len(labels))[: args.limit]
    images, labels = images[keep], labels[keep]
    target_B = torch.searchsorted(torch.tensor(classes), labels)
    ll_BCK = per_scale_log_likelihoods(model, images, classes, args.batch)
    print(f"{args.checkpoint}: {len(labels)} test images of {source}, classes {classes}, scales {model.patch_nums}")
    print(f"{'scales':<8} {'first k':>8} {'k alone':>8}")
    for k, (first, alone) in enumerate(scale_accuracies(ll_BCK, target_B), start=1):
        print(f"{k:<8} {first:>8.4f} {alone:>8.4f}")
    ds = load_dataset(load_protocol(args.protocol)[0].dataset if args.protocol else args.dataset)
    mean_C, std_C = own_class_statistics(model, classes, ds.x_train, ds.y_train, args.per_class, args.batch)
    ll_BC = ll_BCK.sum(-1)
    for name, s_BC in [("plain", ll_BC), ("centred", ll_BC - mean_C), ("z", (ll_BC - mean_C) / std_C)]:
        print(f"{name:<8} {(s_BC.argmax(1) == target_B).float().mean().item():.4f}")
    pred_B = ll_BC.argmax(1)
    print("plain accuracy per class:               ",
          " ".join(f"{(pred_B[target_B == i] == i).float().mean().item():.3f}" for i in range(len(classes))))
    print("own-class log-likelihood mean per class:", " ".join(f"{m:.1f}" for m in mean_C.tolist()))
    print("own-class log-likelihood sd per class:  ", " ".join(f"{s:.1f}" for s in std_C.tolist()))
    test_mean_C = torch.stack([ll_BC[target_B == i, i].mean() for i in range(len(classes))])
    print("... on its own test images, mean:        ", " ".join(f"{m:.1f}" for m in test_mean_C.tolist()))


if __name__ == "__main__":
    main()
