"""How CCA fine-tuning moves the class heads' likelihoods, and where the errors it adds come from.

    python benchmarks/cca_effect.py results/split_digits_cca_ablation --reference varc --rows cca cca_old_256

For each cell of the ``--reference`` row and the same (seed, class order) cell of every other
row (their ``model.pt``: same seed, so the same tokenizer, trunk and maximum-likelihood heads;
what differs is the CCA step), on the protocol's whole test set:

- **shift** of each head c's log p(x | c), compared row minus reference, averaged over the test
  images of c itself, of c's partner in its experience (CCA's negatives), of the classes learnt
  before c and of those learnt after it;
- **moved** test images: right under the reference and wrong under the row (and how many of
  those went to a class learnt later than the image's own), and the reverse;
- each model's **errors**, split into confusions between two classes of one experience (the
  only pairs CCA sees) and across experiences.

Plain scoring (argmax log p(x | y), uniform prior) of every learnt class. It measures and
prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from cil.data import load_dataset
from varc.model import VARModel
from varc.train import as_image_tensor


def shift_by_relation(d_NC: np.ndarray, y_N: np.ndarray, classes: list[int], exp_of: dict[int, int]) -> dict[str, float]:
    """Mean of d_NC[n, c] over the (image, head) pairs of each relation between the image's class
    and the head's class c: 'own', 'partner' (same experience), 'before' (image's class learnt
    earlier than c), 'after' (learnt later)."""
    sums = {"own": [], "partner": [], "before": [], "after": []}
    for j, c in enumerate(classes):
        for n, yc in enumerate(y_N):
            yc = int(yc)
            key = ("own" if yc == c else "partner" if exp_of[yc] == exp_of[c]
                   else "before" if exp_of[yc] < exp_of[c] else "after")
            sums[key].append(d_NC[n, j])
    return {k: float(np.mean(v)) if v else float("nan") for k, v in sums.items()}


def error_split(pred_N: np.ndarray, y_N: np.ndarray, exp_of: dict[int, int]) -> tuple[int, int, int]:
    """(errors, of them within one experience's classes, across experiences)."""
    wrong = [(int(a), int(b)) for a, b in zip(y_N, pred_N) if a != b]
    within = sum(1 for a, b in wrong if exp_of[a] == exp_of[b])
    return len(wrong), within, len(wrong) - within


def experiences(config: dict) -> dict[int, int]:
    """class -> index of the experience that brought it, from a cell's config.yaml."""
    return {int(c): i for i, group in enumerate(config["run"]["classes_per_experience"]) for c in group}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--reference", default="varc", help="the row without CCA (default varc)")
    ap.add_argument("--rows", nargs="+", required=True, help="rows to compare with it")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cells = sorted(p.parent.name for p in (args.run_dir / args.reference).glob("*/model.pt"))
    if not cells:
        raise SystemExit(f"error: no {args.reference}/*/model.pt under {args.run_dir}; run the protocol first")
    data = None
    for cell in cells:
        config = yaml.safe_load((args.run_dir / args.reference / cell / "config.yaml").read_text())
        if data is None:
            ds = load_dataset(config["dataset"])
            data = as_image_tensor(ds.x_test), np.asarray(ds.y_test)
        x, y = data
        exp_of = experiences(config)
        classes = sorted(exp_of)
        lls = {}
        for row in [args.reference] + args.rows:
            path = args.run_dir / row / cell / "model.pt"
            if not path.is_file():
                raise SystemExit(f"error: {path} is missing; run the row's cell first")
            with torch.no_grad():
                model = VARModel.load(path, device="cpu")
                lls[row] = model.class_log_likelihoods(x, classes, batch_size=128).numpy()
        ref_pred = np.asarray(classes)[lls[args.reference].argmax(1)]
        n, within, across = error_split(ref_pred, y, exp_of)
        print(f"{cell} {args.reference}: {n} errors, {within} within an experience, {across} across")
        for row in args.rows:
            shift = shift_by_relation(lls[row] - lls[args.reference], y, classes, exp_of)
            pred = np.asarray(classes)[lls[row].argmax(1)]
            lost = [(int(t), int(p)) for t, p, r in zip(y, pred, ref_pred) if r == t and p != t]
            gained = sum(1 for t, p, r in zip(y, pred, ref_pred) if r != t and p == t)
            to_later = sum(1 for t, p in lost if exp_of[p] > exp_of[t])
            n, within, across = error_split(pred, y, exp_of)
            print(f"{cell} {row}: shift of head c's log p(x | c), nats: own class {shift['own']:+.1f}, "
                  f"partner {shift['partner']:+.1f}, classes learnt before c {shift['before']:+.1f}, after c "
                  f"{shift['after']:+.1f}; images lost {len(lost)} ({to_later} to a later class), gained {gained}; "
                  f"{n} errors, {within} within an experience, {across} across")


if __name__ == "__main__":
    main()
