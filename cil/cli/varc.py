"""``cil varc``: train, evaluate and sample the VAR generative classifier on a dataset.

    cil varc train  --dataset mnist --epochs 4 --out runs/varc_mnist.pt
    cil varc eval   runs/varc_mnist.pt --dataset mnist
    cil varc sample runs/varc_mnist.pt --out grid.png

Each sub-command sets ``func``; ``func(args)`` returns the exit status. torch and varc are
imported inside the command functions, so building the parser costs nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cil.config import field_overrides
from cil.errors import UserError


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``varc`` with its ``train``, ``eval`` and ``sample`` sub-commands to the main parser."""
    varc = subparsers.add_parser("varc", help="train, evaluate or sample the VAR generative classifier",
                                 description="The VAR model on its own: joint training on all classes of a "
                                             "dataset, argmax-likelihood accuracy, class-conditional samples.")
    sub = varc.add_subparsers(dest="varc_command", metavar="{train,eval,sample}", required=True)

    tr = sub.add_parser("train", help="train tokenizer and transformer jointly on all classes of a dataset",
                        description="Train the multi-scale VQ-VAE, then the transformer, on the training set "
                                    "of a dataset; print one line per epoch; save a checkpoint.")
    tr.add_argument("--dataset", default="mnist", help="dataset name (see 'cil list datasets'), default mnist")
    tr.add_argument("--out", required=True, help="checkpoint file to write (torch state dict)")
    tr.add_argument("--epochs", type=int, default=4, help="transformer epochs (default 4)")
    tr.add_argument("--tokenizer-epochs", type=int, default=1, help="tokenizer epochs (default 1)")
    tr.add_argument("--train-limit", type=int, default=None, metavar="N",
                    help="use a random N of the training images (default: all)")
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=2e-3, help="transformer learning rate (default 2e-3)")
    tr.add_argument("--tokenizer-lr", type=float, default=2e-3)
    tr.add_argument("--preset", default=None, choices=("digits", "mnist", "cifar"),
                    help="model preset (default: chosen from the image shape)")
    tr.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a model config field, e.g. width=128, head=lora:8 (repeatable)")
    tr.add_argument("--samples", default=None, metavar="PNG", help="also write a sample grid here")
    tr.add_argument("--eval", action="store_true", help="evaluate on the test set after training")
    _add_common(tr)
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="argmax-likelihood accuracy of a checkpoint on a dataset's test set",
                        description="Classify every test image by argmax_y log p(x|y) over the checkpoint's "
                                    "classes; print accuracy and images per second.")
    ev.add_argument("checkpoint")
    ev.add_argument("--dataset", default="mnist")
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N test images")
    ev.add_argument("--num-scales", type=int, default=None, metavar="M",
                    help="score with the first M scales only (prefix likelihood)")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    _add_common(ev)
    ev.set_defaults(func=_cmd_eval)

    sa = sub.add_parser("sample", help="write a PNG grid of class-conditional samples, one row per class",
                        description="Draw samples of every class of a checkpoint and write them as a PNG grid.")
    sa.add_argument("checkpoint")
    sa.add_argument("--out", required=True, help="PNG file to write")
    sa.add_argument("--per-class", type=int, default=10, help="samples per class (columns), default 10")
    sa.add_argument("--temperature", type=float, default=1.0)
    sa.add_argument("--top-k", type=int, default=None)
    sa.add_argument("--cfg", type=float, default=0.0, help="classifier-free guidance weight (default 0: none)")
    sa.add_argument("--scale", type=int, default=3, help="pixel enlargement of the PNG (default 3)")
    _add_common(sa)
    sa.set_defaults(func=_cmd_sample)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the checkpoint's, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", "--data-root", dest="root", default=None, metavar="DIR",
                   help="data root (default: $CIL_DATA, else ~/.cache/varc-cil/data)")


def _setup(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _load_model(path: str, device: str | None):
    from varc.model import VARModel

    if not Path(path).is_file():
        raise UserError(f"checkpoint {path!r} does not exist; train one with 'cil varc train --out FILE'")
    try:
        return VARModel.load(path, device=device)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load {path!r} as a VAR checkpoint: {exc}") from exc


def _cmd_train(args: argparse.Namespace) -> int:
    _setup(args)
    import torch

    from cil.data import load_dataset
    from varc import train as vt
    from varc.config import preset, preset_for_shape
    from varc.model import VARModel

    ds = load_dataset(args.dataset, root=args.root)
    overrides = field_overrides(args.set)
    if args.device:
        overrides["device"] = args.device
    try:
        cfg = preset(args.preset, **overrides) if args.preset else preset_for_shape(ds.image_shape, **overrides)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model config: {exc}") from exc
    if (cfg.in_channels, cfg.image_size, cfg.image_size) != ds.image_shape:
        raise UserError(f"model expects images {(cfg.in_channels, cfg.image_size, cfg.image_size)}, dataset "
                        f"{args.dataset!r} has {ds.image_shape}; set in_channels/image_size to match")
    images = vt.as_image_tensor(ds.x_train)
    labels = torch.as_tensor(ds.y_train, dtype=torch.long)
    if args.train_limit:
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[: args.train_limit]
        images, labels = images[keep], labels[keep]
    model = VARModel(cfg, classes=range(ds.n_classes), seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"varc: {args.dataset} {len(images)} training images, {ds.n_classes} classes, L = {model.seq_len} tokens, "
          f"{n_params:,} parameters, device {model.device}", flush=True)

    vt.train_tokenizer(model, images, epochs=args.tokenizer_epochs, batch_size=args.batch_size,
                       lr=args.tokenizer_lr, seed=args.seed,
                       progress=lambda r: print(f"tokenizer epoch {r['epoch']}/{r['epochs']}: recon mse "
                                                f"{r['recon_mse']:.4f}, vq loss {r['vq_loss']:.4f}, code usage "
                                                f"{r['code_usage']:.2f}, perplexity {r['perplexity']:.1f}, "
                                                f"restarts {r['restarts']} ({r['seconds']:.1f} s)", flush=True))
    model.freeze_tokenizer()
    tokens = vt.encode_dataset(model, images)
    vt.train_transformer(model, labels=labels, tokens=tokens, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed,
                         progress=lambda r: print(f"transformer epoch {r['epoch']}/{r['epochs']}: nll/token "
                                                  f"{r['loss']:.4f}, nll/image {r['nll_per_image']:.2f} nats "
                                                  f"({r['seconds']:.1f} s, {r['tokens_per_s']:,.0f} tokens/s)",
                                                  flush=True))
    model.save(args.out, extra={"dataset": args.dataset, "class_names": list(ds.class_names)})
    print(f"checkpoint written to {args.out}")
    if args.samples:
        from varc.viz import sample_grid

        sample_grid(model, args.samples, seed=args.seed)
        print(f"samples written to {args.samples}")
    if args.eval:
        _report_accuracy(model, ds, args.dataset, None, None, 256, None)
    return 0


def _report_accuracy(model, ds, name: str, limit: int | None, num_scales: int | None, batch_size: int,
                     json_path: str | None) -> dict:
    from varc import train as vt

    unknown = sorted(set(range(ds.n_classes)) - set(model.classes))
    if unknown:
        raise UserError(f"the checkpoint has no parameters for classes {unknown} of {name!r}; "
                        f"evaluate it on a dataset with classes {model.classes}")
    x, y = ds.x_test[:limit], ds.y_test[:limit]
    try:
        r = vt.evaluate_accuracy(model, vt.as_image_tensor(x), y, batch_size=batch_size, num_scales=num_scales)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    scales = "all scales" if num_scales is None else f"first {num_scales} scales"
    print(f"accuracy {r['accuracy']:.4f} on {r['n']} test images of {name} ({scales}); "
          f"{r['images_per_s']:.1f} images/s ({r['seconds']:.1f} s, {len(model.classes)} classes each)")
    if json_path:
        from cil.results import atomic_write_text

        atomic_write_text(Path(json_path), json.dumps({"dataset": name, "num_scales": num_scales, **r}, indent=2) + "\n")
    return r


def _cmd_eval(args: argparse.Namespace) -> int:
    _setup(args)
    from cil.data import load_dataset

    model = _load_model(args.checkpoint, args.device)
    ds = load_dataset(args.dataset, root=args.root)
    cfg = model.config
    if (cfg.in_channels, cfg.image_size, cfg.image_size) != ds.image_shape:
        raise UserError(f"checkpoint expects images {(cfg.in_channels, cfg.image_size, cfg.image_size)}, "
                        f"dataset {args.dataset!r} has {ds.image_shape}")
    _report_accuracy(model, ds, args.dataset, args.limit, args.num_scales, args.batch_size, args.json)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    _setup(args)
    from varc.viz import sample_grid

    model = _load_model(args.checkpoint, args.device)
    if not model.classes:
        raise UserError(f"checkpoint {args.checkpoint!r} has no classes to sample")
    if args.per_class < 1 or args.temperature <= 0:
        raise UserError("--per-class must be >= 1 and --temperature > 0")
    sample_grid(model, args.out, per_class=args.per_class, temperature=args.temperature, top_k=args.top_k,
                cfg=args.cfg, seed=args.seed, scale=args.scale)
    print(f"{args.per_class} samples of each of {len(model.classes)} classes written to {args.out} (one row per class)")
    return 0
