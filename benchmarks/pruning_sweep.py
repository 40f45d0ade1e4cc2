"""Accuracy and speed of candidate-pruning schedules (and smoothing) on a trained VAR classifier.

    python benchmarks/pruning_sweep.py results/split_mnist/varc/seed0_natural/model.pt --dataset mnist --limit 2000

Scores a fixed random subset of the test set with plain VARC and with each schedule, in the
same process, and prints accuracy, images per second and token-forwards per image, so a
schedule for A-VARC+ can be chosen from measurements rather than guesses. It measures and
prints; it asserts nothing.

``--protocol NAME`` takes the test images as the protocol's run saw them (stream order), so the
``--limit`` images timed here are exactly the ones the run's inference report timed (the same
``report_limit``), and the search images below are none of them; ``--offset R --limit N`` times
N images the report (of R images) did not see, to check a schedule on other images.

``--search D`` first runs one full pass over *other* test images (``--search-limit`` of them,
disjoint from the ones timed, so a schedule is not chosen on the images that judge it), keeps
every candidate's log-likelihood after each scale (exact prefixes, so every schedule's
decisions can be replayed from them) and lists the schedules with the fewest token-forwards
among those that lose at most D points of accuracy there: fixed top-k stages (up to three) and
two-stage schedules with margins. Time the promising ones with ``--schedules``.

Schedule syntax: ``3:7,4:3`` = keep the 7 best after 3 scales, then the 3 best after 4, then
all scales; ``3:7@12`` = of those 7, only the ones within 12 nats of the best.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from cil.config import load_protocol
from cil.data import load_dataset
from cil.strategies.base import stream_test_images
from cil.strategies.generative import report_order
from cil.streams import protocol_stream
from varc.classifier import ScoringConfig, parse_schedule, score
from varc.explain import scale_log_likelihoods
from varc.model import VARModel
from varc.train import as_image_tensor

DEFAULT_SCHEDULES = ["3:3", "4:3", "3:6,4:3", "3:7,4:3", "3:7@12,4:4@20"]
MARGINS = [None, 5.0, 10.0, 15.0, 20.0, 30.0]  # nats, for --search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dataset", default="mnist", help="test images in the dataset's own order")
    ap.add_argument("--protocol", default=None,
                    help="test images in this protocol's stream order, as its run's inference report drew them")
    ap.add_argument("--limit", type=int, default=2000, help="test images (fixed random subset)")
    ap.add_argument("--offset", type=int, default=0,
                    help="skip this many images of the fixed random order first (e.g. the report's own)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--schedules", nargs="*", default=DEFAULT_SCHEDULES,
                    help="each 'm:k[@d][,m:k[@d]...]' = keep k classes (within d nats of the best) after m scales")
    ap.add_argument("--smooth", nargs="*", default=["2:0.05", "4:0.05", "4:0.1"], help="S:sigma settings")
    ap.add_argument("--search", type=float, default=None, metavar="D",
                    help="list the cheapest schedules that lose at most D accuracy points (replayed from one full pass)")
    ap.add_argument("--search-limit", type=int, default=2000, help="test images for --search, disjoint from --limit")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = VARModel.load(args.checkpoint, device="cpu")
    all_images, all_labels, source = test_set(args.protocol, args.dataset)
    order = report_order(len(all_labels))
    end = args.offset + args.limit
    keep = order[args.offset: end]
    images, labels = all_images[keep], all_labels[keep]
    classes = model.classes
    if args.search is not None:
        other = order[end: end + args.search_limit]
        if len(other) == 0:
            raise SystemExit("--search: no test images are left after --offset + --limit; lower --limit or --offset")
        search(model, all_images[other], all_labels[other], args.batch, args.search)
    settings = [ScoringConfig()]
    for text in args.schedules:
        settings.append(ScoringConfig(prune=parse_schedule(parse_stages(text), model.num_scales)))
    for text in args.smooth:
        s, sigma = text.split(":")
        settings.append(ScoringConfig(smooth_samples=int(s), smooth_std=float(sigma)))
    print(f"{args.checkpoint}: {len(labels)} test images of {source}, classes {classes}, "
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


def test_set(protocol: str | None, dataset: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """All test images and labels: in the protocol's stream order, or in the dataset's order."""
    if protocol is None:
        ds = load_dataset(dataset)
        return as_image_tensor(ds.x_test), torch.as_tensor(ds.y_test), dataset
    p, _ = load_protocol(protocol)
    _, stream = protocol_stream(p)
    images, labels = stream_test_images(stream.benchmark.test_stream)
    return images, labels, f"{p.dataset} (stream order of protocol {p.name})"


def parse_stages(text: str) -> list[list]:
    """'3:7@12,4:3' -> [[3, 7, 12.0], [4, 3]]."""
    out = []
    for part in text.split(","):
        m, _, rest = part.partition(":")
        keep, _, margin = rest.partition("@")
        out.append([int(m), int(keep)] + ([float(margin)] if margin else []))
    return out


def prefix_log_likelihoods(lp_BCL: torch.Tensor, ends: list[int]) -> torch.Tensor:
    """log p(r_<=k | y) for every image, class and scale k: [B, C, K], what pruning after scale k sees."""
    return scale_log_likelihoods(lp_BCL, ends).cumsum(-1)


def replay(cum_BCK: torch.Tensor, target_B: torch.Tensor, ends: list[int], stages: list[tuple]) -> tuple[float, float]:
    """Accuracy and token-forwards per image of a schedule [(m, keep, margin|None), ...], from
    prefix log-likelihoods [B, C, K]; the same decisions as ``varc.classifier.score``."""
    B, C, K = cum_BCK.shape
    alive = torch.ones(B, C, dtype=torch.bool)
    decided = torch.zeros(B, dtype=torch.bool)
    at = torch.full((B,), K - 1)  # the scale each image's decision uses
    cost, done = 0, 0
    for m, keep, margin in stages + [(K, 1, None)]:
        active = alive & ~decided[:, None]
        if not active.any():
            break
        if m < K and margin is None and keep >= int(active.sum(1).max()):
            continue
        cost += int(active.sum()) * (ends[m - 1] - done)
        done = ends[m - 1]
        at[~decided] = m - 1
        if m == K:
            break
        s_BC = cum_BCK[..., m - 1].masked_fill(~active, float("-inf"))
        kept = torch.zeros_like(alive).scatter_(1, s_BC.topk(min(keep, C), 1).indices, True)
        if margin is not None:
            kept &= s_BC >= s_BC.max(1, keepdim=True).values - margin
        alive &= kept | decided[:, None]
        decided = alive.sum(1) == 1
    final_BC = cum_BCK[torch.arange(B), :, at].masked_fill(~alive, float("-inf"))
    return (final_BC.argmax(1) == target_B).float().mean().item(), cost / B


@torch.no_grad()
def search(model: VARModel, images: torch.Tensor, labels: torch.Tensor, batch: int, max_drop: float) -> None:
    classes, K = model.classes, model.num_scales
    lp_BCL = model.class_token_log_probs(images, classes, batch_size=batch)
    cum_BCK = prefix_log_likelihoods(lp_BCL, model.scale_ends)
    target_B = torch.searchsorted(torch.tensor(classes), labels)
    full_acc, full_cost = replay(cum_BCK, target_B, model.scale_ends, [])
    C = len(classes)
    candidates = []
    for n in (1, 2, 3):  # fixed top-k, up to three stages, strictly fewer candidates each stage
        for ms in itertools.combinations(range(1, K), n):
            for ks in itertools.combinations(range(C - 1, 0, -1), n):
                candidates.append([(m, k, None) for m, k in zip(ms, ks)])
    for m1, m2 in itertools.combinations(range(1, K), 2):  # two stages with margins
        for k1, k2 in itertools.product(range(2, C), range(1, C)):
            for d1, d2 in itertools.product(MARGINS, MARGINS):
                if (d1 is not None or d2 is not None) and k2 <= k1:
                    candidates.append([(m1, k1, d1), (m2, k2, d2)])
    found = []
    for stages in candidates:
        acc, cost = replay(cum_BCK, target_B, model.scale_ends, stages)
        if acc >= full_acc - max_drop / 100:
            found.append((cost, -acc, ",".join(f"{m}:{k}" + (f"@{d:g}" if d is not None else "") for m, k, d in stages)))
    print(f"search on {len(labels)} other test images: plain VARC {full_acc:.4f} at {full_cost:.0f} "
          f"token-forwards/image; schedules within {max_drop:g} points, cheapest first:")
    for cost, neg_acc, text in sorted(found)[:10]:
        print(f"  {text:<20} accuracy {-neg_acc:.4f}  token-forwards/image {cost:6.1f}  ({full_cost / cost:.2f}x fewer)")


if __name__ == "__main__":
    main()
