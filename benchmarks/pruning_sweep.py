"""Accuracy and speed of candidate-pruning schedules (and smoothing) on a trained VAR classifier.

    python benchmarks/pruning_sweep.py results/split_mnist/varc/seed0/model.pt --dataset mnist --limit 2000

Scores a fixed random subset of the test set with plain VARC and with each schedule, in the
same process, and prints accuracy, images per second and token-forwards per image, so a
schedule for A-VARC+ can be chosen from measurements rather than guesses. It measures and
prints; it asserts nothing.

``--search D`` first runs one full pass, keeps every candidate's log-likelihood after each scale
(exact prefixes, so every schedule's decisions can be replayed from them) and lists the
schedules of up to three pruning stages with the fewest token-forwards among those that lose at
most D points of accuracy on these images; time the promising ones with ``--schedules``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from cil.data import load_dataset
from varc.classifier import ScoringConfig, parse_schedule, score
from varc.model import VARModel
from varc.train import as_image_tensor

DEFAULT_SCHEDULES = ["3:3", "4:3", "3:5,4:3", "3:6,4:3", "3:6,4:2", "2:9,3:6,4:3"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--limit", type=int, default=2000, help="test images (fixed random subset)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--schedules", nargs="*", default=DEFAULT_SCHEDULES,
                    help="each 'm:k[,m:k...]' = keep k classes after m scales, then all scales")
    ap.add_argument("--smooth", nargs="*", default=["2:0.05", "4:0.05", "4:0.1"], help="S:sigma settings")
    ap.add_argument("--search", type=float, default=None, metavar="D",
                    help="list the cheapest schedules that lose at most D accuracy points (replayed from one full pass)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = VARModel.load(args.checkpoint, device="cpu")
    ds = load_dataset(args.dataset)
    keep = torch.randperm(len(ds.y_test), generator=torch.Generator().manual_seed(0))[: args.limit]
    images = as_image_tensor(ds.x_test)[keep]
    labels = torch.as_tensor(ds.y_test)[keep]
    classes = model.classes
    if args.search is not None:
        search(model, images, labels, args.batch, args.search)
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


def replay(cum_BCK: torch.Tensor, target_B: torch.Tensor, ends: list[int], stages: list[tuple[int, int]]
           ) -> tuple[float, float]:
    """Accuracy and token-forwards per image of a schedule, from prefix log-likelihoods [B, C, K]."""
    B, C, K = cum_BCK.shape
    alive = torch.ones(B, C, dtype=torch.bool)
    cost, done, m = 0, 0, K
    for m, keep in stages + [(K, 1)]:
        if m == K or keep < int(alive.sum(1).max()):
            cost += int(alive.sum()) * (ends[m - 1] - done)
            done = ends[m - 1]
            s_BC = cum_BCK[..., m - 1].masked_fill(~alive, float("-inf"))
            alive &= torch.zeros_like(alive).scatter_(1, s_BC.topk(min(keep, C), 1).indices, True)
        if int(alive.sum(1).max()) == 1:
            break
    s_BC = cum_BCK[..., m - 1].masked_fill(~alive, float("-inf"))
    return (s_BC.argmax(1) == target_B).float().mean().item(), cost / B


@torch.no_grad()
def search(model: VARModel, images: torch.Tensor, labels: torch.Tensor, batch: int, max_drop: float) -> None:
    classes, K = model.classes, model.num_scales
    lp_BCL = torch.cat([model.class_token_log_probs(images[s:s + batch], classes) for s in range(0, len(labels), batch)])
    cum_BCK = torch.stack([lp_BCL[..., :e].sum(-1) for e in model.scale_ends], -1)
    target_B = torch.searchsorted(torch.tensor(classes), labels)
    full_acc, full_cost = replay(cum_BCK, target_B, model.scale_ends, [])
    found = []
    for n in (1, 2, 3):
        for ms in itertools.combinations(range(1, K), n):
            for ks in itertools.combinations(range(len(classes) - 1, 0, -1), n):  # strictly fewer each stage
                acc, cost = replay(cum_BCK, target_B, model.scale_ends, list(zip(ms, ks)))
                if acc >= full_acc - max_drop / 100:
                    found.append((cost, acc, ",".join(f"{m}:{k}" for m, k in zip(ms, ks))))
    print(f"search: plain VARC {full_acc:.4f} at {full_cost:.0f} token-forwards/image; schedules within "
          f"{max_drop:g} points, cheapest first:")
    for cost, acc, text in sorted(found)[:10]:
        print(f"  {text:<20} accuracy {acc:.4f}  token-forwards/image {cost:6.1f}  ({full_cost / cost:.2f}x fewer)")


if __name__ == "__main__":
    main()
