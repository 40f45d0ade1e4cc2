"""Accuracy and speed of candidate-pruning schedules (and smoothing) on a trained VAR classifier.

    python benchmarks/pruning_sweep.py results/split_mnist/varc/seed0/model.pt --dataset mnist --limit 2000

Scores a fixed random subset of the test set with plain VARC and with each schedule, in the
same process, and prints accuracy, images per second and token-forwards per image, so a
schedule for A-VARC+ can be chosen from measurements rather than guesses. It measures and
prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch

from cil.data import load_dataset
from varc.classifier import ScoringConfig, parse_schedule, score
from varc.model import VARModel
from varc.train import as_image_tensor

DEFAULT_SCHEDULES = ["2:3", "2:2", "3:3", "3:2", "2:4,3:2", "2:5,3:3", "4:2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--limit", type=int, default=2000, help="test images (fixed random subset)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--schedules", nargs="*", default=DEFAULT_SCHEDULES,
                    help="each 'm:k[,m:k...]' = keep k classes after m scales, then all scales")
    ap.add_argument("--smooth", nargs="*", default=["2:0.05", "4:0.05", "4:0.1"], help="S:sigma settings")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = VARModel.load(args.checkpoint, device="cpu")
    ds = load_dataset(args.dataset)
    keep = torch.randperm(len(ds.y_test), generator=torch.Generator().manual_seed(0))[: args.limit]
    images = as_image_tensor(ds.x_test)[keep]
    labels = torch.as_tensor(ds.y_test)[keep]
    classes = model.classes
    settings = [ScoringConfig()]
    for text in args.schedules:
        stages = [[int(a) for a in part.split(":")] for part in text.split(",")]
        settings.append(ScoringConfig(prune=parse_schedule(stages, model.num_scales)))
    for text in args.smooth:
        s, sigma = text.split(":")
        settings.append(ScoringConfig(smooth_samples=int(s), smooth_std=float(sigma)))
    print(f"{args.checkpoint}: {len(labels)} test images of {args.dataset}, classes {classes}, "
          f"L = {model.seq_len}, scales {model.patch_nums}")
    print(f"{'setting':<34} {'accuracy':>9} {'images/s':>9} {'speed-up':>9} {'token-fwd/img':>14}")
    base_ips = None
    for cfg in settings:
        correct, forwards = 0, 0
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for s in range(0, len(labels), args.batch):
            res = score(model, images[s:s + args.batch], classes, cfg, generator=g)
            correct += int((res.predict(classes).cpu() == labels[s:s + args.batch]).sum())
            forwards += res.token_forwards
        ips = len(labels) / (time.perf_counter() - t0)
        base_ips = base_ips or ips
        print(f"{cfg.name:<34} {correct / len(labels):>9.4f} {ips:>9.1f} {ips / base_ips:>8.2f}x "
              f"{forwards / len(labels):>14.1f}", flush=True)


if __name__ == "__main__":
    main()
