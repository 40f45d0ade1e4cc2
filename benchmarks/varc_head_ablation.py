"""How much per-class capacity does a frozen trunk need to model classes it has never seen?

Split-MNIST setting: the tokenizer, the trunk and the heads of the first classes (and of the
null class) are trained on the first classes only (default 0 and 1); then the trunk is frozen
and every later class gets its own head, trained alone on that class's images. One base model
is trained once (``--tokenizer-data all`` lets the tokenizer see every class, as a
strategy may when it has other unlabelled images); each head kind (``embedding``, ``lora:<r>``, ``full``) then starts from the
same trunk (its adapters at zero, so classes 0 and 1 are unchanged) and trains the later heads.
Printed per kind: argmax-likelihood accuracy over all classes, accuracy on the later classes,
test NLL per image of the later classes under their own heads, parameters per class, seconds.
A jointly trained reference (trunk on all classes) can be added with --joint.

    python benchmarks/varc_head_ablation.py --heads embedding,lora:4,lora:8,full
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cil.config import field_overrides
from cil.data import load_dataset
from varc import train as vt
from varc.config import preset_for_shape
from varc.model import VARModel


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--heads", default="embedding,lora:4,lora:8,full")
    ap.add_argument("--first", default="0,1", help="classes that train the trunk")
    ap.add_argument("--per-class", type=int, default=2000, help="training images per class")
    ap.add_argument("--test", type=int, default=2000, help="test images (a fixed random subset)")
    ap.add_argument("--tokenizer-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4, help="trunk epochs on the first classes")
    ap.add_argument("--head-epochs", type=int, default=3)
    ap.add_argument("--head-lr", type=float, default=3e-3)
    ap.add_argument("--tokenizer-data", default="first", choices=("first", "all"),
                    help="train the tokenizer on the first classes only (default) or on all training images")
    ap.add_argument("--init", default="random", choices=("random", "null"), help="initial value of later heads")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--joint", action="store_true", help="also train a joint reference model on all classes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    return ap.parse_args()


def subset_per_class(y: torch.Tensor, per_class: int, g: torch.Generator) -> torch.Tensor:
    keep = []
    for c in y.unique().tolist():
        idx = (y == c).nonzero()[:, 0]
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(keep)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    overrides = field_overrides(args.set)
    ds = load_dataset(args.dataset)
    g = torch.Generator().manual_seed(args.seed)
    x, y = vt.as_image_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    keep = subset_per_class(y, args.per_class, g)
    x, y = x[keep], y[keep]
    test = torch.randperm(len(ds.y_test), generator=g)[: args.test]
    xt, yt = vt.as_image_tensor(ds.x_test[test.numpy()]), torch.as_tensor(ds.y_test[test.numpy()])
    first = [int(c) for c in args.first.split(",")]
    later = [c for c in range(ds.n_classes) if c not in first]
    in_first = torch.isin(y, torch.tensor(first))
    log = lambda s: print(s, flush=True)  # noqa: E731

    base_cfg = preset_for_shape(ds.image_shape, head="embedding", **overrides)
    base = VARModel(base_cfg, classes=first, seed=args.seed)
    t0 = time.perf_counter()
    tok_x = x[in_first] if args.tokenizer_data == "first" else x
    vt.train_tokenizer(base, tok_x, epochs=args.tokenizer_epochs, seed=args.seed,
                       progress=lambda r: log(f"tokenizer epoch {r['epoch']}: recon mse {r['recon_mse']:.4f} "
                                              f"usage {r['code_usage']:.2f}"))
    base.freeze_tokenizer()
    tokens = vt.encode_dataset(base, x)
    sel = in_first.nonzero()[:, 0]
    vt.train_transformer(base, labels=y[sel], tokens=[t[sel] for t in tokens], epochs=args.epochs, seed=args.seed,
                         progress=lambda r: log(f"trunk epoch {r['epoch']}: nll/image {r['nll_per_image']:.1f}"))
    log(f"base model on classes {first}: {time.perf_counter() - t0:.0f} s; config {base_cfg}")
    test_tokens = vt.encode_dataset(base, xt)
    base_state = base.state_dict()

    results = []
    for head in args.heads.split(","):
        model = VARModel(base_cfg.with_(head=head), classes=first, seed=args.seed)
        missing, unexpected = model.load_state_dict(base_state, strict=False)
        assert not unexpected and all(".lora_" in k or ".delta." in k for k in missing), (missing, unexpected)
        model.freeze_trunk()
        model.freeze_tokenizer()
        t0 = time.perf_counter()
        for c in later:
            model.add_classes([c], init=args.init)
            sel = (y == c).nonzero()[:, 0]
            vt.train_transformer(model, labels=y[sel], tokens=[t[sel] for t in tokens],
                                 params=model.class_parameters([c]), epochs=args.head_epochs, lr=args.head_lr,
                                 label_drop=0.0, seed=args.seed + c)
        train_s = time.perf_counter() - t0
        results.append(evaluate(model, head, test_tokens, yt, later, train_s))
        log(json.dumps(results[-1]))

    if args.joint:
        joint = VARModel(base_cfg.with_(head=args.heads.split(",")[-1]), classes=range(ds.n_classes), seed=args.seed)
        joint.tokenizer.load_state_dict(base.tokenizer.state_dict())
        joint.freeze_tokenizer()
        t0 = time.perf_counter()
        vt.train_transformer(joint, labels=y, tokens=tokens, epochs=args.epochs, seed=args.seed)
        results.append(evaluate(joint, "joint:" + joint.config.head, test_tokens, yt, later, time.perf_counter() - t0))
        log(json.dumps(results[-1]))

    print(f"\n{'head':<16}{'acc all':>9}{'acc later':>11}{'NLL later':>11}{'params/class':>14}{'train s':>9}")
    for r in results:
        print(f"{r['head']:<16}{r['accuracy']:>9.4f}{r['accuracy_later']:>11.4f}{r['nll_later']:>11.1f}"
              f"{r['params_per_class']:>14,}{r['train_seconds']:>9.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


@torch.no_grad()
def evaluate(model: VARModel, name: str, tokens: list[torch.Tensor], y: torch.Tensor, later: list[int],
             train_s: float) -> dict:
    classes = model.classes
    scores = model.class_log_likelihoods(tokens, classes, batch_size=500)
    pred = torch.tensor(classes)[scores.argmax(1)]
    is_later = torch.isin(y, torch.tensor(later))
    own = scores[torch.arange(len(y)), torch.searchsorted(torch.tensor(classes), y)]
    return {"head": name, "accuracy": (pred == y).float().mean().item(),
            "accuracy_later": (pred == y)[is_later].float().mean().item(),
            "nll_later": -own[is_later].mean().item(),
            "params_per_class": sum(p.numel() for p in model.class_parameters([later[0]])),
            "train_seconds": train_s}


if __name__ == "__main__":
    main()
