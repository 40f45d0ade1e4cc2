"""``cil explain``: token-wise mutual information maps of a VAR classifier, and their faithfulness.

    cil explain runs/varc_mnist.pt --n 16 --out results/explain_mnist
    cil explain results/split_mnist --strategy varc --seed 0 --out explain/

Writes ``explanations.png`` (one row per image: the image, the TMI map of the predicted class,
the contrast map against the runner-up) and, unless ``--faithfulness 0``, ``faithfulness.csv``
(mean insertion and deletion AUC of every method, judged by the VAR classifier and by the CNN),
``faithfulness_per_image.csv``, ``faithfulness_curves.csv`` and ``faithfulness_curves.png``.
The maps are ``varc.explain``; the experiment, the baseline CNN and the curves are
``cil.explain``; see docs/explain.md for the definitions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cil.errors import UserError
from cil.explain import METHODS


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``explain`` to the main parser."""
    p = subparsers.add_parser(
        "explain", help="TMI heatmaps of a VAR classifier and insertion/deletion faithfulness",
        description="Token-wise mutual information maps of a VAR classifier's decisions (PNG grid) and "
                    "insertion/deletion AUCs of TMI against random order, CNN input-gradient and occlusion, "
                    "and the VAR classifier's own gradient saliency (faithfulness.csv).")
    p.add_argument("model", metavar="CHECKPOINT_OR_RUN",
                   help="a VAR checkpoint (.pt), or a run folder holding <strategy>/seed<k>/model.pt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--strategy", default="varc", help="strategy folder inside a run folder (default varc)")
    p.add_argument("--seed", type=int, default=0, help="seed folder inside a run folder (default 0); also seeds "
                   "the image choice, the random baseline and the CNN")
    p.add_argument("--dataset", default=None,
                   help="dataset of the test images (default: the checkpoint's or the run's)")
    p.add_argument("--root", "--data-root", dest="root", default=None, metavar="DIR",
                   help="data root (default: $CIL_DATA, else ~/.cache/varc-cil/data)")
    p.add_argument("--n", type=int, default=16, help="images in the PNG grid (default 16)")
    p.add_argument("--faithfulness", type=int, default=100, metavar="N",
                   help="test images for the faithfulness table (default 100; 0 skips it)")
    p.add_argument("--steps", type=int, default=16, help="points per insertion/deletion curve, minus one (default 16)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated maps to score, from {', '.join(METHODS)} (default: all)")
    p.add_argument("--marginal", default="bayes", choices=("bayes", "null"),
                   help="TMI marginal: exact Bayes mixture over the classes, or the null-class model (default bayes)")
    p.add_argument("--insertion-canvas", default="blur", choices=("blur", "blank"),
                   help="what insertion starts from (default blur: the image blurred)")
    p.add_argument("--deletion-fill", default="blank", choices=("blank", "blur"),
                   help="what deleted pixels become (default blank: 0)")
    p.add_argument("--blur-sigma", type=float, default=None,
                   help="Gaussian blur std in pixels (default image side / 7)")
    p.add_argument("--cnn-weights", default=None, metavar="PT",
                   help="state dict of the baseline CNN (cil.models 'cnn'); default: train one now")
    p.add_argument("--cnn-epochs", type=int, default=1, help="epochs when training the CNN (default 1)")
    p.add_argument("--cnn-train-limit", type=int, default=None, metavar="N",
                   help="train the CNN on a random N training images (default all)")
    p.add_argument("--batch-size", type=int, default=32, help="images per explanation batch (default 32)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=_cmd_explain)


def _say(line: str) -> None:
    print(line, flush=True)


def _parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"--methods: {bad[0] if bad else spec!r} is not a method; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def _dataset(args: argparse.Namespace, model, cell: Path | None) -> tuple[str, str | None]:
    """(dataset name, data root): --dataset, else what the checkpoint or its run cell recorded."""
    from cil.explain.experiment import recorded_dataset

    if args.dataset:
        return args.dataset, args.root
    found = recorded_dataset(model, cell)
    if found is None:
        raise UserError("cannot tell which dataset the model was trained on; pass --dataset NAME")
    name, root = found
    return name, args.root or root


def _baseline_cnn(args: argparse.Namespace, ds, image_shape: tuple[int, int, int], out: Path):
    """The CNN of --cnn-weights, or one trained now (and saved as out/cnn.pt)."""
    from cil.explain import cnn

    if args.cnn_weights:
        path = Path(args.cnn_weights)
        if not path.is_file():
            raise UserError(f"--cnn-weights {args.cnn_weights!r} does not exist; omit it to train a CNN now")
        try:
            return cnn.load_cnn(path, n_classes=ds.n_classes, image_shape=image_shape)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"--cnn-weights {args.cnn_weights!r}: not a state dict of the 'cnn' backbone "
                            f"for {image_shape} images and {ds.n_classes} classes ({exc})") from exc
    net = cnn.train_cnn_on_dataset(ds, image_shape, epochs=args.cnn_epochs, train_limit=args.cnn_train_limit,
                                   seed=args.seed, log=_say)
    cnn.save_cnn(net, out / "cnn.pt")
    return net


def _cmd_explain(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n < 0 or args.faithfulness < 0:
        raise UserError("--n and --faithfulness must be >= 0")
    if args.n == 0 and args.faithfulness == 0:
        raise UserError("nothing to do: --n 0 and --faithfulness 0")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    methods = _parse_methods(args.methods)

    from cil.data import load_dataset
    from cil.explain import experiment
    from varc.model import VARModel

    model_path, cell = experiment.resolve_checkpoint(args.model, args.strategy, args.seed)
    try:
        model = VARModel.load(model_path, device=args.device)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load {str(model_path)!r} as a VAR checkpoint: {exc}") from exc
    model.eval()
    classes = model.classes
    if len(classes) < 2:
        raise UserError(f"{str(model_path)!r} has {len(classes)} class(es); explanations need at least two")
    name, root = _dataset(args, model, cell)
    ds = load_dataset(name, root=root)
    cfg = model.config
    image_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if image_shape != ds.image_shape:
        raise UserError(f"the model expects images {image_shape}, dataset {name!r} has {ds.image_shape}; "
                        f"pass the --dataset it was trained on")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_test, y_test, order = experiment.shuffled_test_set(ds, args.seed)
    print(f"explain: {model_path} ({len(classes)} classes, L = {model.seq_len} tokens), dataset {name}, "
          f"marginal {args.marginal}", flush=True)

    if args.n:
        idx = order[: args.n]
        grid = experiment.draw_explanations(model, x_test[idx], y_test[idx], ds.class_names, out,
                                            marginal=args.marginal)
        print(f"explanation grid of {len(idx)} images written to {grid}", flush=True)
    if not args.faithfulness:
        return 0

    idx = order[: min(args.faithfulness, len(x_test))]
    cnn = _baseline_cnn(args, ds, image_shape, out)  # a baseline's maps, and a second judge of every map
    r = experiment.faithfulness(model, cnn, x_test[idx], y_test[idx], idx, out, methods=methods, steps=args.steps,
                                batch_size=args.batch_size, seed=args.seed, blur_sigma=args.blur_sigma,
                                insertion_canvas=args.insertion_canvas, deletion_fill=args.deletion_fill, log=_say)
    print(f"VAR accuracy {r.var_accuracy:.3f}, CNN accuracy {r.cnn_accuracy:.3f}, agreement {r.agreement:.3f} "
          f"on {r.n_images} test images; {r.seconds:.0f} s")
    print(f"{'method':<14} {'judge':<5} {'insertion AUC':>14} {'deletion AUC':>13}")
    for row in r.summary:
        print(f"{row['method']:<14} {row['judge']:<5} {row['insertion_auc']:>8.4f}±{row['insertion_sem']:.4f} "
              f"{row['deletion_auc']:>7.4f}±{row['deletion_sem']:.4f}")
    print(f"faithfulness table written to {out / 'faithfulness.csv'}")
    return 0
