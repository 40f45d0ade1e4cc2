"""How well does a tokenizer fitted to the first experience reconstruct the classes it never saw?

    python benchmarks/tokenizer_coverage.py --dataset fashion_mnist --first 0,1 --epochs 2,6,12 \
        --all-classes 2 --set width=128

The class-incremental VAR classifier trains its multi-scale VQ tokenizer on the first
experience's images and freezes it, so every later class is tokenised with a codebook fitted
to two classes; detail the tokenizer cannot reconstruct is detail no head can use. For each of
``--epochs`` this trains that tokenizer (the VAR preset for the dataset's image shape, with the
``--set`` overrides; ``--batch-size`` and ``--lr``, by default the VARC strategy's own) on the training images of the
``--first`` classes, and prints the reconstruction MSE of ``--per-class`` test images of every
class and its mean over the later classes. ``--all-classes E`` adds a reference tokenizer
trained E epochs on every class's training images: what a tokenizer fitted before the stream
to the whole training set (``tokenizer_data``, a change of protocol) would give. It measures
and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np
import torch

from cil.config import field_overrides
from cil.data import load_dataset
from cil.strategies.generative import build_varc
from varc import train as vt
from varc.config import preset_for_shape
from varc.model import VARModel


def per_class_mse(model: VARModel, x_test: torch.Tensor, y_test: torch.Tensor, classes: list[int],
                  per_class: int) -> list[float]:
    """Reconstruction MSE (encode -> decode) of the first ``per_class`` test images of each class."""
    return [vt.reconstruction_error(model, x_test[y_test == c][:per_class]) for c in classes]


def main() -> None:
    strategy = inspect.signature(build_varc).parameters  # one source for the defaults
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--first", default="0,1", help="the first experience's classes, which train the tokenizer")
    ap.add_argument("--epochs", default="2,6", help="tokenizer epochs to try, comma-separated")
    ap.add_argument("--all-classes", type=int, default=0, metavar="E",
                    help="also train a reference tokenizer E epochs on every class (0: none)")
    ap.add_argument("--per-class", type=int, default=500, help="test images per class")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="VAR model settings")
    ap.add_argument("--batch-size", type=int, default=strategy["batch_size"].default)
    ap.add_argument("--lr", type=float, default=strategy["tokenizer_lr"].default, help="tokenizer learning rate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        epochs = [int(e) for e in args.epochs.split(",")]
        first = [int(c) for c in args.first.split(",")]
    except ValueError:
        raise SystemExit(f"--epochs and --first take comma-separated integers, got {args.epochs!r} and {args.first!r}")
    if min(epochs) < 1 or args.all_classes < 0 or args.per_class < 1 or args.batch_size < 1 or not args.lr > 0:
        raise SystemExit("--epochs must be >= 1, --all-classes >= 0, --per-class >= 1, --batch-size >= 1 "
                         f"and --lr > 0, got {args.epochs!r}, {args.all_classes}, {args.per_class}, "
                         f"{args.batch_size} and {args.lr}")
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    classes = list(range(ds.n_classes))
    if not set(first) < set(classes):
        raise SystemExit(f"--first must name some (not all) of {args.dataset}'s classes {classes}, got {first}")
    later = [c for c in classes if c not in first]
    x_train, y_train = vt.as_image_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    x_test, y_test = vt.as_image_tensor(ds.x_test), torch.as_tensor(ds.y_test)
    cfg = preset_for_shape(ds.image_shape, **field_overrides(args.set))
    print(f"{args.dataset}: tokenizer {cfg.patch_nums} scales, {cfg.vocab_size} codes of {cfg.latent_dim} "
          f"channels; first classes {first}; batch {args.batch_size}, lr {args.lr:g}; "
          f"MSE on {args.per_class} test images per class")
    print(f"{'trained on':<16} {'epochs':>6} {'s':>5}  " + " ".join(f"{c:>6}" for c in classes) + "   later mean")
    runs = [("first classes", e, torch.isin(y_train, torch.tensor(first))) for e in epochs]
    if args.all_classes:
        runs.append(("every class", args.all_classes, torch.ones_like(y_train, dtype=torch.bool)))
    for name, ep, mask in runs:
        model = VARModel(cfg, seed=args.seed)
        t0 = time.perf_counter()
        vt.train_tokenizer(model, x_train[mask], epochs=ep, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed)
        seconds = time.perf_counter() - t0
        mse = per_class_mse(model, x_test, y_test, classes, args.per_class)
        print(f"{name:<16} {ep:>6} {seconds:>5.0f}  " + " ".join(f"{m:.4f}" for m in mse)
              + f"   {np.mean([mse[c] for c in later]):.4f}", flush=True)


if __name__ == "__main__":
    main()
