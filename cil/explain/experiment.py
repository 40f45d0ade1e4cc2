"""The experiment of ``cil explain``: a grid of a VAR classifier's TMI maps, and the faithfulness
table of every map (insertion and deletion AUC, judged by the VAR classifier and by a CNN).

:func:`draw_explanations` writes ``explanations.png`` (one row per image: the image, the TMI map
of the predicted class, the contrast map against the runner-up); :func:`faithfulness` writes
``faithfulness.csv`` (mean insertion and deletion AUC of every method and judge),
``faithfulness_per_image.csv``, ``faithfulness_curves.csv`` and ``faithfulness_curves.png``.
Definitions in docs/explain.md.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from cil.errors import UserError
from cil.explain import METHODS
from cil.explain import faithfulness as fa
from cil.results import atomic_write_bytes, atomic_write_text
from varc import explain as ve
from varc.model import VARModel
from varc.train import as_image_tensor


# =============================================================================================
# Inputs
# =============================================================================================
def resolve_checkpoint(path: str, strategy: str = "varc", seed: int = 0) -> tuple[Path, Path | None]:
    """(model file, run cell folder or None) for a checkpoint file, a cell folder or a run folder."""
    p = Path(path)
    if p.is_file():
        return p, None
    if p.is_dir():
        if (p / "model.pt").is_file():
            return p / "model.pt", p
        cells = [p / strategy / f"seed{seed}"] + sorted((p / strategy).glob(f"seed{seed}_*"))  # _<order>
        found = [c for c in cells if (c / "model.pt").is_file()]
        if len(found) > 1:
            raise UserError(f"{path!r} holds {len(found)} {strategy} cells of seed {seed} with a model "
                            f"({', '.join(c.name for c in found)}); pass one cell folder, e.g. {found[0]}")
        if found:
            return found[0] / "model.pt", found[0]
        raise UserError(f"{path!r} holds no {strategy}/seed{seed}[_<order>]/model.pt; run a protocol with the "
                        f"'{strategy}' strategy into it, or pass --strategy/--seed of a cell that has one")
    raise UserError(f"{path!r} does not exist; give a VAR checkpoint file or a run folder")


def recorded_dataset(model: VARModel, cell: Path | None) -> tuple[str, str | None] | None:
    """(dataset name, data root or None) recorded in the checkpoint or in its run cell's
    ``config.yaml``; None when neither says."""
    extra = getattr(model, "checkpoint_extra", {}) or {}
    if extra.get("dataset"):
        return str(extra["dataset"]), None
    if cell is not None and (cell / "config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load((cell / "config.yaml").read_text(encoding="utf-8")) or {}
        if cfg.get("dataset"):
            return str(cfg["dataset"]), cfg.get("data_root")
    return None


def shuffled_test_set(ds, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(test images [N, C, H, W], labels [N], a random order of the N images seeded by ``seed``)."""
    x_test = as_image_tensor(ds.x_test)
    y_test = torch.as_tensor(ds.y_test, dtype=torch.long)
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(seed))
    return x_test, y_test, order


# =============================================================================================
# Files
# =============================================================================================
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


def render_curves(path: Path, curves: dict[tuple[str, str, str], "object"], methods: list[str], judge: str,
                  n_images: int) -> None:
    """Mean insertion and deletion curves of every method ([images, steps] each, or the mean
    curve alone), as judged by ``judge``: the two panels side by side, one legend beside them
    (each method with both AUCs), the number of images averaged above."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    lines, labels = {}, {}
    for ax, kind in zip(axes, ("insertion", "deletion")):
        for m in methods:
            c = curves.get((m, judge, kind))
            if c is None:
                continue
            mean = np.atleast_2d(np.asarray(c)).mean(0)
            x = np.linspace(0, 1, len(mean))
            (lines[m],) = ax.plot(x, mean, color=lines[m].get_color() if m in lines else None)
            labels[m] = labels.get(m, m) + f"{', ' if m in labels else ' ('}{kind[:3]}. {np.trapezoid(mean, x):.3f}"
        ax.set_xlabel(f"fraction of pixels {'revealed' if kind == 'insertion' else 'removed'}")
        ax.set_title(kind + (" (higher is better)" if kind == "insertion" else " (lower is better)"), fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"p(predicted class), by the {judge.upper()} classifier")
    fig.legend([lines[m] for m in lines], [labels[m] + ")" for m in lines], loc="outside right center",
               fontsize=8, title="method (AUC)", title_fontsize=8, frameon=False)
    fig.suptitle(f"Insertion and deletion curves, mean over {n_images} test images", fontsize=11)
    _save_figure(fig, path)


def redraw_curves(out: Path) -> Path:
    """Draw ``out/faithfulness_curves.png`` again from ``out/faithfulness_curves.csv`` (the mean
    curves) and ``faithfulness.csv`` (the image count), without rerunning the experiment."""
    rows = list(csv.DictReader(io.StringIO((Path(out) / "faithfulness_curves.csv").read_text())))
    n = int(next(csv.DictReader(io.StringIO((Path(out) / "faithfulness.csv").read_text())))["n_images"])
    curves: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        curves.setdefault((r["method"], r["judge"], r["kind"]), []).append(float(r["mean_probability"]))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    render_curves(Path(out) / "faithfulness_curves.png", curves, methods, "var", n_images=n)
    return Path(out) / "faithfulness_curves.png"


# =============================================================================================
# The explanation grid
# =============================================================================================
def draw_explanations(model: VARModel, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                      out: Path, *, marginal: str = "bayes") -> Path:
    """One row per image (image, TMI map of the predicted class, contrast map against the runner-up),
    written to ``out/explanations.png`` (``explanations_<marginal>.png`` for another marginal)."""
    classes = model.classes
    H, W = model.config.image_size, model.config.image_size
    class_names = list(class_names)

    def cname(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    with torch.no_grad():
        ex = ve.explain_tokens(model, images, classes, marginal=marginal)
    pred, runner = ex.predicted, ex.runner_up
    tmi_map = ve.pixel_map(ex.tmi(pred), model.patch_nums, (H, W))
    con_map = ve.pixel_map(ex.contrast(pred, runner), model.patch_nums, (H, W))
    post = ex.log_posterior_BC.exp()
    titles = []
    for b in range(len(images)):
        p, q = int(pred[b]), int(runner[b])
        titles.append((f"label {cname(int(labels[b]))}, pred {cname(classes[p])} (p={post[b, p]:.2f})",
                       f"TMI of {cname(classes[p])}: sum {float(tmi_map[b].sum()):+.1f}",
                       f"{cname(classes[p])} vs {cname(classes[q])} (p={float(post[b, q]):.0e}): "
                       f"{float(con_map[b].sum()):+.0f}"))
    grid = out / ("explanations.png" if marginal == "bayes" else f"explanations_{marginal}.png")
    render_grid(grid, images.mean(1).numpy(), tmi_map.numpy(), con_map.numpy(), titles,
                suptitle=f"image | TMI map of the predicted class ({marginal} marginal) | contrast vs "
                         f"runner-up     (nats per pixel; red: evidence for, blue: against; sums in nats)")
    return grid


# =============================================================================================
# Faithfulness
# =============================================================================================
@dataclass
class FaithfulnessResult:
    """What :func:`faithfulness` found, besides the files it wrote."""

    summary: list[dict]  # the rows of faithfulness.csv: one per method and judge
    n_images: int
    var_accuracy: float  # of the VAR classifier on the images
    cnn_accuracy: float
    agreement: float  # fraction of images on which the two classifiers agree
    seconds: float  # wall time, files included


def faithfulness(model: VARModel, cnn, x: torch.Tensor, y: torch.Tensor, image_ids: torch.Tensor, out: Path, *,
                 methods: Sequence[str] = METHODS, steps: int = 16, batch_size: int = 32, seed: int = 0,
                 blur_sigma: float | None = None, insertion_canvas: str = "blur", deletion_fill: str = "blank",
                 log: Callable[[str], None] = print) -> FaithfulnessResult:
    """Insertion and deletion curves of every map in ``methods`` on images ``x`` (labels ``y``, dataset
    indices ``image_ids``), each judged by the VAR classifier and by ``cnn``, towards the class the
    VAR classifier predicts on the clean image; writes the four faithfulness files into ``out``.

    ``seed`` seeds the random map and the tie-breaking of equally salient pixels (the same ties for
    every map); ``blur_sigma`` defaults to image side / 7. One ``log`` line per batch of images.
    """
    classes = model.classes
    H, W = model.config.image_size, model.config.image_size
    n = len(x)
    sigma = blur_sigma if blur_sigma is not None else H / 7
    judges = {"var": fa.var_log_posterior_fn(model, classes)}

    def cnn_log_prob(images, target):
        with torch.no_grad():
            logits = cnn(images.cpu())[:, classes]  # restricted to the VAR classifier's classes
        return torch.log_softmax(logits, 1).gather(1, torch.as_tensor(target).cpu()[:, None])[:, 0]

    judges["cnn"] = cnn_log_prob
    rand_gen = torch.Generator().manual_seed(seed)
    curves: dict[tuple[str, str, str], list] = {}
    per_image: list[dict] = []
    seconds = {m: 0.0 for m in methods}
    agree = correct_var = correct_cnn = 0
    t_start = time.perf_counter()
    for s in range(0, n, batch_size):
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
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
                maps[m] = fa.random_saliency(len(xb), (H, W), generator=rand_gen)
            elif m == "cnn_gradient":
                maps[m] = fa.input_gradient(lambda im: cnn(im)[:, classes], xb, target)
            elif m == "cnn_occlusion":
                maps[m] = fa.occlusion(judges["cnn"], xb, target, patch=max(2, H // 7), stride=max(1, H // 14))
            elif m == "var_gradient":
                maps[m] = fa.var_gradient_saliency(model, xb, target, classes)
            seconds[m] += time.perf_counter() - t0
        blurred, blank = fa.gaussian_blur(xb, sigma), torch.zeros_like(xb)
        canvases = {"insertion": blurred if insertion_canvas == "blur" else blank,
                    "deletion": blurred if deletion_fill == "blur" else blank}
        ends = {(jname, kind): fa.curve_ends(fa.probability_fn(jfn), xb, target, kind=kind, canvas=canvases[kind])
                for jname, jfn in judges.items() for kind in ("insertion", "deletion")}
        rows = {}
        for m, sal in maps.items():
            t0 = time.perf_counter()
            for jname, jfn in judges.items():
                for kind in ("insertion", "deletion"):
                    tie_gen = torch.Generator().manual_seed(seed * 1_000_003 + s)  # same ties for every map
                    c = fa.perturbation_curve(fa.probability_fn(jfn), xb, sal, target, kind=kind,
                                              canvas=canvases[kind], steps=steps, batch_size=1024,
                                              generator=tie_gen, ends_B2=ends[(jname, kind)])
                    curves.setdefault((m, jname, kind), []).append(c)
                    rows[(m, jname, kind)] = fa.auc(c)
            seconds[m] += time.perf_counter() - t0
        for b in range(len(xb)):
            for m in methods:
                for jname in judges:
                    per_image.append({"image": int(image_ids[s + b]), "label": int(yb[b]),
                                      "predicted": classes[int(target[b])], "method": m, "judge": jname,
                                      "insertion_auc": round(float(rows[(m, jname, "insertion")][b]), 6),
                                      "deletion_auc": round(float(rows[(m, jname, "deletion")][b]), 6)})
        done = min(n, s + batch_size)
        log(f"faithfulness: {done}/{n} images ({time.perf_counter() - t_start:.0f} s)")
    curves_t = {k: torch.cat(v) for k, v in curves.items()}
    summary = []
    for m in methods:
        for jname in judges:
            ins, dele = curves_t[(m, jname, "insertion")], curves_t[(m, jname, "deletion")]
            a_ins, a_del = fa.auc(ins), fa.auc(dele)
            summary.append({
                "method": m, "judge": jname, "n_images": n, "steps": steps,
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
            curve_rows.append({"method": m, "judge": jname, "kind": kind, "fraction": round(i / steps, 6),
                               "mean_probability": round(v, 6)})
    _write_csv(out / "faithfulness_curves.csv", curve_rows)
    render_curves(out / "faithfulness_curves.png", {k: v.numpy() for k, v in curves_t.items()}, list(methods), "var",
                  n_images=n)
    return FaithfulnessResult(summary=summary, n_images=n, var_accuracy=correct_var / n, cnn_accuracy=correct_cnn / n,
                              agreement=agree / n, seconds=time.perf_counter() - t_start)
