"""``cil explain``: token-wise mutual information maps of a VAR classifier, and their faithfulness.

    cil explain runs/varc_mnist.pt --n 16 --out results/explain_mnist
    cil explain results/split_mnist --strategy varc --seed 0 --out explain/

Writes ``explanations.png`` (one row per image: the image, the TMI map of the predicted class,
the contrast map against the runner-up) and, unless ``--faithfulness 0``, ``faithfulness.csv``
(mean insertion and deletion AUC of every method, judged by the VAR classifier and by the CNN),
``faithfulness_per_image.csv``, ``faithfulness_curves.csv`` and ``faithfulness_curves.png``.
The computations live in ``varc.explain``; see docs/explain.md for the definitions.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from pathlib import Path

from cil.errors import UserError
from cil.results import atomic_write_bytes, atomic_write_text

METHODS = ("tmi", "tmi_null", "contrast", "random", "cnn_gradient", "cnn_occlusion", "var_gradient")
DEFAULT_METHODS = METHODS


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
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


# =============================================================================================
# Inputs
# =============================================================================================
def resolve_checkpoint(path: str, strategy: str = "varc", seed: int = 0) -> tuple[Path, Path | None]:
    """(model file, run cell folder or None) for a checkpoint file, a cell folder or a run folder."""
    p = Path(path)
    if p.is_file():
        return p, None
    if p.is_dir():
        for cell in (p, p / strategy / f"seed{seed}"):
            if (cell / "model.pt").is_file():
                return cell / "model.pt", cell
        raise UserError(f"{path!r} holds no {strategy}/seed{seed}/model.pt; run a protocol with the "
                        f"'{strategy}' strategy into it, or pass --strategy/--seed of a cell that has one")
    raise UserError(f"{path!r} does not exist; give a VAR checkpoint file or a run folder")


def _dataset_name(args: argparse.Namespace, model, cell: Path | None) -> tuple[str, str | None]:
    if args.dataset:
        return args.dataset, args.root
    extra = getattr(model, "checkpoint_extra", {}) or {}
    if extra.get("dataset"):
        return str(extra["dataset"]), args.root
    if cell is not None and (cell / "config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load((cell / "config.yaml").read_text(encoding="utf-8")) or {}
        if cfg.get("dataset"):
            return str(cfg["dataset"]), args.root or cfg.get("data_root")
    raise UserError("cannot tell which dataset the model was trained on; pass --dataset NAME")


def _parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"--methods: {bad[0] if bad else spec!r} is not a method; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _save_figure(fig, path: Path, dpi: int = 110) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


# =============================================================================================
# The baseline CNN
# =============================================================================================
def train_cnn(x_train, y_train, *, n_classes: int, image_shape: tuple[int, int, int], epochs: int = 1,
              batch_size: int = 128, lr: float = 1e-3, seed: int = 0, log=print):
    """The discriminative baseline (``cil.models`` 'cnn') trained jointly on all classes with Adam."""
    import torch

    from cil.models import build_backbone

    torch.manual_seed(seed)
    net = build_backbone("cnn", n_classes=n_classes, image_shape=image_shape)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        order = torch.randperm(len(x_train), generator=g)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"cnn epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f} ({time.perf_counter() - t0:.1f} s)")
    net.eval()
    return net


def _load_or_train_cnn(args: argparse.Namespace, ds, image_shape, out: Path):
    import torch

    from cil.models import build_backbone
    from varc.train import as_image_tensor

    if args.cnn_weights:
        path = Path(args.cnn_weights)
        if not path.is_file():
            raise UserError(f"--cnn-weights {args.cnn_weights!r} does not exist; omit it to train a CNN now")
        net = build_backbone("cnn", n_classes=ds.n_classes, image_shape=image_shape)
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"--cnn-weights {args.cnn_weights!r}: not a state dict of the 'cnn' backbone "
                            f"for {image_shape} images and {ds.n_classes} classes ({exc})") from exc
        return net.eval()
    x = as_image_tensor(ds.x_train)
    y = torch.as_tensor(ds.y_train, dtype=torch.long)
    if args.cnn_train_limit:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: args.cnn_train_limit]
        x, y = x[keep], y[keep]
    print(f"training the baseline CNN on {len(x)} images for {args.cnn_epochs} epoch(s)", flush=True)
    net = train_cnn(x, y, n_classes=ds.n_classes, image_shape=image_shape, epochs=args.cnn_epochs, seed=args.seed)
    torch.save(net.state_dict(), out / "cnn.pt")
    return net


# =============================================================================================
# Figures
# =============================================================================================
def render_grid(path: Path, images_BHW, tmi_BHW, contrast_BHW, titles: list[tuple[str, str, str]], *,
                suptitle: str = "", group_rows: int = 8) -> None:
    """Rows of (image, TMI map, contrast map); more than ``group_rows`` images go side by side in groups.

    Both maps use a diverging colormap centred at 0 (red: evidence for the class, blue: against),
    symmetric per panel, with the digit's outline drawn on top.
    """
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    n = len(images_BHW)
    groups = max(1, math.ceil(n / group_rows))
    rows = math.ceil(n / groups)
    height = rows * 2.0 + 0.7
    fig = Figure(figsize=(3 * groups * 2.1, height))
    gs = fig.add_gridspec(rows, 3 * groups, wspace=0.4, hspace=0.4, left=0.02, right=0.97,
                          top=1 - 0.75 / height, bottom=0.01)
    cmap = matplotlib.colormaps["RdBu_r"]
    for i in range(n):
        g, r = divmod(i, rows)
        img = np.asarray(images_BHW[i], dtype=float)
        level = 0.5 * (img.min() + img.max())
        for j, (panel, title) in enumerate(zip((None, tmi_BHW[i], contrast_BHW[i]), titles[i])):
            ax = fig.add_subplot(gs[r, 3 * g + j])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
            if panel is None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                continue
            m = np.asarray(panel, dtype=float)
            lim = float(np.abs(m).max()) or 1.0
            im = ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
            if img.max() > img.min():
                ax.contour(img, levels=[level], colors="k", linewidths=0.6)
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            cb.ax.tick_params(labelsize=6)
            cb.set_ticks([-lim, 0, lim])
            cb.set_ticklabels([f"{-lim:.2g}", "0", f"{lim:.2g}"])
    fig.suptitle(suptitle, fontsize=10, y=1 - 0.12 / height)
    _save_figure(fig, path)


def render_curves(path: Path, curves: dict[tuple[str, str, str], "object"], methods: list[str], judge: str) -> None:
    """Mean insertion and deletion curves of every method, as judged by ``judge``."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    for j, kind in enumerate(("insertion", "deletion")):
        ax = fig.add_subplot(1, 2, j + 1)
        for m in methods:
            c = curves.get((m, judge, kind))
            if c is None:
                continue
            mean = np.asarray(c).mean(0)
            x = np.linspace(0, 1, len(mean))
            ax.plot(x, mean, label=f"{m} (AUC {np.trapezoid(mean, x):.3f})")
        ax.set_xlabel(f"fraction of pixels {'revealed' if kind == 'insertion' else 'removed'}")
        ax.set_ylabel(f"p(predicted class), {judge} classifier")
        ax.set_title(kind + (" (higher is better)" if kind == "insertion" else " (lower is better)"), fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


# =============================================================================================
# The command
# =============================================================================================
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
    from varc import explain as ve
    from varc.model import VARModel
    from varc.train import as_image_tensor

    model_path, cell = resolve_checkpoint(args.model, args.strategy, args.seed)
    try:
        model = VARModel.load(model_path, device=args.device)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load {str(model_path)!r} as a VAR checkpoint: {exc}") from exc
    model.eval()
    classes = model.classes
    if len(classes) < 2:
        raise UserError(f"{str(model_path)!r} has {len(classes)} class(es); explanations need at least two")
    name, root = _dataset_name(args, model, cell)
    ds = load_dataset(name, root=root)
    cfg = model.config
    image_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if image_shape != ds.image_shape:
        raise UserError(f"the model expects images {image_shape}, dataset {name!r} has {ds.image_shape}; "
                        f"pass the --dataset it was trained on")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x_test = as_image_tensor(ds.x_test)
    y_test = torch.as_tensor(ds.y_test, dtype=torch.long)
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(args.seed))
    H, W = cfg.image_size, cfg.image_size
    class_names = list(ds.class_names)

    def cname(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    print(f"explain: {model_path} ({len(classes)} classes, L = {model.seq_len} tokens), dataset {name}, "
          f"marginal {args.marginal}", flush=True)

    # ---- the PNG grid ------------------------------------------------------------------------
    if args.n:
        idx = order[: args.n]
        with torch.no_grad():
            ex = ve.explain_tokens(model, x_test[idx], classes, marginal=args.marginal)
        pred, runner = ex.predicted, ex.runner_up
        tmi_map = ve.pixel_map(ex.tmi(pred), model.patch_nums, (H, W))
        con_map = ve.pixel_map(ex.contrast(pred, runner), model.patch_nums, (H, W))
        post = ex.log_posterior_BC.exp()
        titles = []
        for b in range(len(idx)):
            p, q = int(pred[b]), int(runner[b])
            titles.append((f"label {cname(int(y_test[idx[b]]))}, pred {cname(classes[p])} (p={post[b, p]:.2f})",
                           f"TMI of {cname(classes[p])}: sum {float(tmi_map[b].sum()):+.1f}",
                           f"{cname(classes[p])} vs {cname(classes[q])} (p={float(post[b, q]):.0e}): "
                           f"{float(con_map[b].sum()):+.0f}"))
        grid = out / ("explanations.png" if args.marginal == "bayes" else f"explanations_{args.marginal}.png")
        render_grid(grid, x_test[idx].mean(1).numpy(), tmi_map.numpy(), con_map.numpy(), titles,
                    suptitle=f"image | TMI map of the predicted class ({args.marginal} marginal) | contrast vs "
                             f"runner-up     (nats per pixel; red: evidence for, blue: against; sums in nats)")
        print(f"explanation grid of {len(idx)} images written to {grid}", flush=True)

    if not args.faithfulness:
        return 0

    # ---- faithfulness --------------------------------------------------------------------------
    n = min(args.faithfulness, len(x_test))
    idx = order[:n]
    x, y = x_test[idx], y_test[idx]
    sigma = args.blur_sigma if args.blur_sigma is not None else H / 7
    judges = {"var": ve.var_log_posterior_fn(model, classes)}
    cnn = _load_or_train_cnn(args, ds, image_shape, out)  # a baseline's maps, and a second judge of every map

    def cnn_log_prob(images, target):
        with torch.no_grad():
            logits = cnn(images.cpu())[:, classes]  # restricted to the VAR classifier's classes
        return torch.log_softmax(logits, 1).gather(1, torch.as_tensor(target).cpu()[:, None])[:, 0]

    judges["cnn"] = cnn_log_prob
    rand_gen = torch.Generator().manual_seed(args.seed)
    curves: dict[tuple[str, str, str], list] = {}
    per_image: list[dict] = []
    seconds = {m: 0.0 for m in methods}
    agree = correct_var = correct_cnn = 0
    t_start = time.perf_counter()
    for s in range(0, n, args.batch_size):
        xb, yb = x[s : s + args.batch_size], y[s : s + args.batch_size]
        t0 = time.perf_counter()
        with torch.no_grad():
            ex = ve.explain_tokens(model, xb, classes, marginal="bayes")
        target = ex.predicted  # index into classes: the VAR classifier's decision on the clean image
        seconds["tmi"] = seconds.get("tmi", 0.0) + time.perf_counter() - t0
        cls_t = torch.as_tensor(classes)
        correct_var += int((cls_t[target] == yb).sum())
        with torch.no_grad():
            cnn_pred = torch.as_tensor(classes)[cnn(xb)[:, classes].argmax(1)]
        correct_cnn += int((cnn_pred == yb).sum())
        agree += int((cnn_pred == cls_t[target]).sum())
        maps = {}
        for m in methods:
            t0 = time.perf_counter()
            if m == "tmi":
                maps[m] = ve.pixel_map(ex.tmi(target), model.patch_nums, (H, W))
            elif m == "tmi_null":
                with torch.no_grad():
                    exn = ve.explain_tokens(model, xb, classes, marginal="null")
                maps[m] = ve.pixel_map(exn.tmi(target), model.patch_nums, (H, W))
            elif m == "contrast":
                maps[m] = ve.pixel_map(ex.contrast(target, ex.runner_up), model.patch_nums, (H, W))
            elif m == "random":
                maps[m] = ve.random_saliency(len(xb), (H, W), generator=rand_gen)
            elif m == "cnn_gradient":
                maps[m] = ve.input_gradient(lambda im: cnn(im)[:, classes], xb, target)
            elif m == "cnn_occlusion":
                maps[m] = ve.occlusion(judges["cnn"], xb, target, patch=max(2, H // 7), stride=max(1, H // 14))
            elif m == "var_gradient":
                maps[m] = ve.var_gradient_saliency(model, xb, target, classes)
            seconds[m] += time.perf_counter() - t0
        blurred, blank = ve.gaussian_blur(xb, sigma), torch.zeros_like(xb)
        canvases = {"insertion": blurred if args.insertion_canvas == "blur" else blank,
                    "deletion": blurred if args.deletion_fill == "blur" else blank}
        ends = {(jname, kind): ve.curve_ends(ve.probability_fn(jfn), xb, target, kind=kind, canvas=canvases[kind])
                for jname, jfn in judges.items() for kind in ("insertion", "deletion")}
        rows = {}
        for m, sal in maps.items():
            t0 = time.perf_counter()
            for jname, jfn in judges.items():
                for kind in ("insertion", "deletion"):
                    tie_gen = torch.Generator().manual_seed(args.seed * 1_000_003 + s)  # same ties for every map
                    c = ve.perturbation_curve(ve.probability_fn(jfn), xb, sal, target, kind=kind,
                                              canvas=canvases[kind], steps=args.steps, batch_size=1024,
                                              generator=tie_gen, ends_B2=ends[(jname, kind)])
                    curves.setdefault((m, jname, kind), []).append(c)
                    rows[(m, jname, kind)] = ve.auc(c)
            seconds[m] += time.perf_counter() - t0
        for b in range(len(xb)):
            for m in methods:
                for jname in judges:
                    per_image.append({"image": int(idx[s + b]), "label": int(yb[b]),
                                      "predicted": classes[int(target[b])], "method": m, "judge": jname,
                                      "insertion_auc": round(float(rows[(m, jname, "insertion")][b]), 6),
                                      "deletion_auc": round(float(rows[(m, jname, "deletion")][b]), 6)})
        done = min(n, s + args.batch_size)
        print(f"faithfulness: {done}/{n} images ({time.perf_counter() - t_start:.0f} s)", flush=True)
    curves_t = {k: torch.cat(v) for k, v in curves.items()}
    summary = []
    for m in methods:
        for jname in judges:
            ins, dele = curves_t[(m, jname, "insertion")], curves_t[(m, jname, "deletion")]
            a_ins, a_del = ve.auc(ins), ve.auc(dele)
            summary.append({
                "method": m, "judge": jname, "n_images": n, "steps": args.steps,
                "insertion_auc": round(float(a_ins.mean()), 4),
                "insertion_sem": round(float(a_ins.std() / math.sqrt(n)) if n > 1 else 0.0, 4),
                "deletion_auc": round(float(a_del.mean()), 4),
                "deletion_sem": round(float(a_del.std() / math.sqrt(n)) if n > 1 else 0.0, 4),
                "map_seconds_per_image": round(seconds[m] / n, 4),
            })
    _write_csv(out / "faithfulness.csv", summary)
    _write_csv(out / "faithfulness_per_image.csv", per_image)
    curve_rows = []
    for (m, jname, kind), c in curves_t.items():
        mean = c.mean(0)
        for i, v in enumerate(mean.tolist()):
            curve_rows.append({"method": m, "judge": jname, "kind": kind, "fraction": round(i / args.steps, 6),
                               "mean_probability": round(v, 6)})
    _write_csv(out / "faithfulness_curves.csv", curve_rows)
    render_curves(out / "faithfulness_curves.png", {k: v.numpy() for k, v in curves_t.items()}, methods, "var")
    print(f"VAR accuracy {correct_var / n:.3f}, CNN accuracy {correct_cnn / n:.3f}, agreement {agree / n:.3f} "
          f"on {n} test images; {time.perf_counter() - t_start:.0f} s")
    print(f"{'method':<14} {'judge':<5} {'insertion AUC':>14} {'deletion AUC':>13}")
    for r in summary:
        print(f"{r['method']:<14} {r['judge']:<5} {r['insertion_auc']:>8.4f}±{r['insertion_sem']:.4f} "
              f"{r['deletion_auc']:>7.4f}±{r['deletion_sem']:.4f}")
    print(f"faithfulness table written to {out / 'faithfulness.csv'}")
    return 0
