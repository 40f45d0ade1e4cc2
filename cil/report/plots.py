"""Figures of a continual-learning run, drawn from its result files alone.

Every function takes a :class:`cil.results.RunData`, returns the matplotlib ``Figure`` (so
callers and tests can inspect axes and legends) and writes it when given a path. Figures are
built with the object-oriented API on a private Agg canvas: no pyplot state, no display.

Styling: sized for a two-column paper (7 in wide, 8-9 pt text), the colour-blind-safe
"colorblind" palette of seaborn (Waskom 2021, after Wong 2011, Nature Methods 8:441), and one
fixed style per strategy across all figures (:func:`strategy_styles`). Bands and error bars are
± one sample standard deviation over seeds; a single seed draws none.
"""

from __future__ import annotations

import functools
import io
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cil.errors import UserError
from cil.report import aggregate as agg
from cil.results import RunData, atomic_write_bytes, read_runs

FORMATS = ("png", "pdf", "svg")
PAGE_WIDTH_IN = 7.0
DPI = 200

# seaborn "colorblind" without its yellow, which vanishes on white as a line.
PALETTE = ["#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC", "#CA9161", "#FBAFE4",
           "#949494", "#56B4E9"]
LINESTYLES = ["-", "--", "-."]
HATCHES = ["", "///", "..."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<"]
N_SLOTS = len(PALETTE) * len(LINESTYLES)

#: Fixed style slots of the strategies the suite ships (slot = colour + 9 * line style).
KNOWN_SLOTS = {
    "varc": 0, "ewc": 1, "lwf": 2, "replay": 3, "gem": 4, "si": 5, "gdumb": 6, "naive": 7,
    "icarl": 8, "avarc": 9, "der": 12, "agem": 13, "slda": 14, "joint": 16, "avarc_plus": 18,
    "cumulative": 25,
}

RC = {
    "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5, "legend.fontsize": 7.5, "legend.title_fontsize": 8,
    "figure.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.4,
    "lines.markersize": 3.5, "svg.hashsalt": "varc-cil", "svg.fonttype": "none",
    "pdf.fonttype": 42, "hatch.linewidth": 0.6,
}


@dataclass(frozen=True)
class Style:
    """How one strategy looks everywhere: colour, line style, bar hatch and marker."""

    color: str
    linestyle: str
    hatch: str
    marker: str


def _slot_style(slot: int) -> Style:
    c, row = slot % len(PALETTE), (slot // len(PALETTE)) % len(LINESTYLES)
    return Style(PALETTE[c], LINESTYLES[row], HATCHES[row], MARKERS[(c + 3 * row) % len(MARKERS)])


def strategy_styles(names: Iterable[str]) -> dict[str, Style]:
    """A style per strategy, the same for a name in every figure of a report.

    Shipped strategies own fixed slots; a variant of one (``replay_500``) takes its colour with
    another line style; other names hash (crc32, stable across processes) to a free slot,
    probing onward on collisions among the given names; when the unreserved slots run out they
    borrow those of shipped strategies not drawn (only more than 27 names reuse a style).
    """
    names = agg.strategy_order(names)
    taken = {KNOWN_SLOTS[n] for n in names if n in KNOWN_SLOTS}
    out = {n: _slot_style(KNOWN_SLOTS[n]) for n in names if n in KNOWN_SLOTS}
    reserved = set(KNOWN_SLOTS.values())
    # variants first, so that they find their base's colour still free
    for n in sorted(set(names) - set(out), key=lambda n: (agg.variant_of(n) is None, n)):
        base = agg.variant_of(n)
        # a variant (replay_500) keeps its base's colour with another line style when one is free
        wanted = ([KNOWN_SLOTS[base] % len(PALETTE) + len(PALETTE) * r for r in range(len(LINESTYLES))]
                  if base in KNOWN_SLOTS else [])
        h = zlib.crc32(n.encode()) % N_SLOTS
        wanted += [(h + k) % N_SLOTS for k in range(N_SLOTS)]
        # a free unreserved slot; else one reserved for a shipped strategy absent from this figure
        slot = next((c for c in wanted if c not in taken and c not in reserved),
                    next((c for c in wanted if c not in taken), h))
        taken.add(slot)
        out[n] = _slot_style(slot)
    return out


# ---------------------------------------------------------------- helpers

def _styled(fn):
    """Run a plotting function under the suite's rcParams (sizes are fixed when text is made)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)
    return wrapper


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` atomically; the format follows the suffix (png, pdf or svg)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UserError(f"{path}: unsupported figure format {fmt!r}; use one of {', '.join(FORMATS)}")
    meta = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None},
            "svg": {"Date": None}}[fmt]
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=meta, facecolor="white")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _one_run(data: RunData, run: str | None) -> str:
    if run is None:
        if len(data.runs) != 1:
            raise UserError(f"several runs ({', '.join(data.runs)}); say which one to draw")
        return data.runs[0]
    if run not in data.run_dirs:
        raise UserError(f"unknown run {run!r}; choose one of {', '.join(data.runs)}")
    return run


def _styles(data: RunData, styles: dict[str, Style] | None) -> dict[str, Style]:
    return styles if styles is not None else strategy_styles(data.summary["strategy"].unique())


def _grid(n: int, max_cols: int = 4, names: Sequence[str] = ()) -> tuple[int, int]:
    """(rows, cols) of a panel grid; long strategy names get wider panels."""
    if names and max(len(s) for s in names) > 16:
        max_cols = min(max_cols, 3)
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _fit(name: str, cols: int) -> str:
    """Shorten a panel title with a middle ellipsis when it would overrun its panel."""
    room = max(12, int(PAGE_WIDTH_IN / cols * 11) - 2)
    if len(name) <= room:
        return name
    head = (room - 1) // 2
    return name[:head] + "…" + name[len(name) - (room - 1 - head):]


def _band(ax, x, mean, sd, color, alpha=0.18) -> None:
    """± sd band, only where sd is defined (two or more seeds)."""
    sd = np.asarray(sd, dtype=float)
    if np.isfinite(sd).any():
        lo = np.clip(np.asarray(mean) - sd, 0, 1)
        hi = np.clip(np.asarray(mean) + sd, 0, 1)
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, linewidth=0,
                        where=np.isfinite(sd), interpolate=False)


def _int_ticks(ax, T: int, axis: str = "x") -> None:
    step = 1 if T <= 12 else math.ceil(T / 10)
    ticks = list(range(0, T, step))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks)


def _cell_text(v: float) -> str:
    """Two decimals without the leading zero (``.83``); ``1.0`` for what rounds to one."""
    text = f"{v:.2f}"
    return "1.0" if text == "1.00" else text.lstrip("0")


def _log_axis(ax, values, axis: str = "x") -> None:
    """Log scale with plain-number ticks (0.01, 0.02, 0.05 ... or 1, 3, 10 ...), never crowded."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    decades = math.log10(v.max() / v.min()) if len(v) else 1.0
    subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3 else (1.0,)
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    a.set_major_locator(LogLocator(base=10, subs=subs))
    a.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    a.set_minor_formatter(NullFormatter())


def _hide_unused(axes, used: int) -> None:
    for ax in axes[used:]:
        ax.set_visible(False)


def _panel_title(ax, name: str, style: Style, cols: int, offset: float = 0.012) -> None:
    """Strategy name over a panel, above a bar in the strategy's colour (its key elsewhere)."""
    ax.set_title(_fit(name, cols), loc="left", fontsize=8.5, pad=7.5)
    ax.plot([0.0, 1.0], [1 + offset, 1 + offset], transform=ax.transAxes, color=style.color,
            linewidth=2.5, clip_on=False, solid_capstyle="butt", zorder=5)


def _bottom_labels(axes, used: int, cols: int, xlabel: str, ylabel: str) -> None:
    """x label under the lowest visible panel of each column, y label on the first column."""
    for k in range(used):
        ax = axes[k]
        ax.tick_params(labelbottom=True)
        if k + cols >= used:
            ax.set_xlabel(xlabel)
        if k % cols == 0:
            ax.set_ylabel(ylabel)


def _seeds_note(n_min: int, n_max: int) -> str:
    if n_max <= 1:
        return "1 seed, no spread shown"
    seeds = f"{n_min}" if n_min == n_max else f"{n_min}-{n_max}"
    return f"mean ± sd over {seeds} seeds"


def _title_run(data: RunData, run: str) -> str:
    protos = data.summary.loc[data.summary["run"] == run, "protocol"].astype(str).unique()
    proto = ", ".join(protos)
    return proto if proto == run else f"{run} ({proto})"


# ---------------------------------------------------------------- figures

@_styled
def plot_forgetting_curves(data: RunData, path: Path | None = None, *, run: str | None = None,
                           styles: dict[str, Style] | None = None) -> Figure:
    """Accuracy on each experience j after each training experience i >= j, one panel per strategy."""
    run = _one_run(data, run)
    curves = agg.forgetting_curves(data)
    curves = curves[curves["run"] == run]
    strategies = agg.strategy_order(curves["strategy"].unique())
    styles = _styles(data, styles)
    T = int(curves["train_exp"].max()) + 1
    cmap = matplotlib.colormaps["viridis"]
    exp_colors = [cmap(0.88 * j / max(T - 1, 1)) for j in range(T)]
    rows, cols = _grid(len(strategies), names=strategies)
    fig = _new_figure(PAGE_WIDTH_IN, 0.6 + 1.75 * rows)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, strat in zip(axes, strategies):
        sub = curves[curves["strategy"] == strat]
        for j in range(T):
            e = sub[sub["eval_exp"] == j].sort_values("train_exp")
            if e.empty:
                continue
            x, m = e["train_exp"].to_numpy(), e["accuracy_mean"].to_numpy()
            ax.plot(x, m, color=exp_colors[j], marker="o", markersize=2.5, label=f"exp {j}")
            _band(ax, x, m, e["accuracy_sd"].to_numpy(), exp_colors[j], alpha=0.15)
        _panel_title(ax, strat, styles[strat], cols)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(-0.3, T - 0.7)
        _int_ticks(ax, T)
    _hide_unused(axes, len(strategies))
    _bottom_labels(axes, len(strategies), cols, "after training experience i", "accuracy on experience j")
    n = data.summary[data.summary["run"] == run].groupby("strategy")["cell"].nunique()
    fig.suptitle(f"Forgetting curves: {_title_run(data, run)} ({_seeds_note(n.min(), n.max())})")
    key = "accuracy on experience j (each line starts when j is trained)"
    if T <= 12:
        handles = [Line2D([], [], color=exp_colors[j], marker="o", markersize=3, label=f"exp {j}")
                   for j in range(T)]
        per_row = T if T <= 6 else math.ceil(T / math.ceil(T / 6))
        fig.legend(handles=handles, loc="outside lower center", ncols=per_row, frameon=False, title=key)
    else:  # a long stream: a colour scale reads better than a dozen legend entries
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import BoundaryNorm, ListedColormap

        mappable = ScalarMappable(norm=BoundaryNorm(np.arange(T + 1) - 0.5, T),
                                  cmap=ListedColormap(exp_colors))
        bar = fig.colorbar(mappable, ax=axes[: len(strategies)].tolist(), location="bottom",
                           shrink=0.6, aspect=40, pad=0.02)
        bar.set_label(key)
        _int_ticks(bar.ax, T)
    if path is not None:
        save_figure(fig, path)
    return fig


@_styled
def plot_average_accuracy(data: RunData, path: Path | None = None, *,
                          styles: dict[str, Style] | None = None) -> Figure:
    """Mean accuracy on all seen experiences after each experience; all strategies on one axis per run."""
    curves = agg.seen_accuracy_curves(data)
    styles = _styles(data, styles)
    runs = data.runs
    rows, cols = _grid(len(runs), 3)
    width = PAGE_WIDTH_IN if len(runs) > 1 else 5.4
    fig = _new_figure(width, 0.4 + 2.7 * rows)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    shown: dict[str, Line2D] = {}
    for ax, run in zip(axes, runs):
        sub = curves[curves["run"] == run]
        T = int(sub["train_exp"].max()) + 1
        for strat in agg.strategy_order(sub["strategy"].unique()):
            s, st = sub[sub["strategy"] == strat].sort_values("train_exp"), styles[strat]
            x, m = s["train_exp"].to_numpy(), s["accuracy_mean"].to_numpy()
            (line,) = ax.plot(x, m, color=st.color, linestyle=st.linestyle, marker=st.marker,
                              label=strat)
            _band(ax, x, m, s["accuracy_sd"].to_numpy(), st.color, alpha=0.14)
            shown.setdefault(strat, line)
        ax.set_xlabel("after training experience i")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(-0.2, T - 0.8)
        _int_ticks(ax, T)
        if len(runs) > 1:
            ax.set_title(_title_run(data, run))
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy on seen experiences")
    _hide_unused(axes, len(runs))
    n = data.summary.groupby(["run", "strategy"])["cell"].nunique()
    head = "Average accuracy over the stream" + ("" if len(runs) > 1 else f": {_title_run(data, runs[0])}")
    fig.suptitle(f"{head} ({_seeds_note(n.min(), n.max())})")
    order = agg.strategy_order(shown)
    axes[min(cols, len(runs)) - 1].legend([shown[s] for s in order], order, loc="upper left",
                                          bbox_to_anchor=(1.02, 1.0), frameon=False, title="strategy")
    if path is not None:
        save_figure(fig, path)
    return fig


@_styled
def plot_accuracy_matrices(data: RunData, path: Path | None = None, *, run: str | None = None,
                           styles: dict[str, Style] | None = None) -> Figure:
    """Heatmap of the accuracy matrix R[i][j] (mean over seeds), annotated, one panel per strategy."""
    run = _one_run(data, run)
    styles = _styles(data, styles)
    a = data.accuracy[data.accuracy["run"] == run]
    strategies = agg.strategy_order(a["strategy"].unique())
    T = int(a["train_exp"].max()) + 1
    rows, cols = _grid(len(strategies), names=strategies)
    fig = _new_figure(PAGE_WIDTH_IN, 0.55 + 1.85 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    cmap = matplotlib.colormaps["cividis"]
    font = 7 if T <= 5 else 5.5 if T <= 8 else 4.2 if T <= 12 else None
    image = None
    for ax, strat in zip(axes, strategies):
        mean, _sd, _n = agg.mean_matrix(data, run, strat)
        image = ax.imshow(mean, vmin=0, vmax=1, cmap=cmap, aspect="equal", interpolation="nearest")
        if font:
            for i in range(T):
                for j in range(T):
                    v = mean[i, j]
                    if np.isfinite(v):
                        ax.text(j, i, _cell_text(v), ha="center", va="center", fontsize=font,
                                color="white" if v < 0.55 else "black")
        _panel_title(ax, strat, styles[strat], cols, offset=0.025)
        ax.grid(False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        _int_ticks(ax, T, "x")
        _int_ticks(ax, T, "y")
        ax.tick_params(length=0, pad=1.5)
    _hide_unused(axes, len(strategies))
    fig.supxlabel("evaluated on experience j", fontsize=8.5)
    fig.supylabel("after training experience i", fontsize=8.5)
    n = data.summary[data.summary["run"] == run].groupby("strategy")["cell"].nunique()
    seeds = "1 seed" if n.max() <= 1 else f"mean over {n.min() if n.min() == n.max() else f'{n.min()}-{n.max()}'} seeds"
    fig.suptitle(f"Accuracy matrix R[i][j]: {_title_run(data, run)} ({seeds})")
    if image is not None:
        fig.colorbar(image, ax=axes[: len(strategies)].tolist(), shrink=0.8, label="accuracy",
                     aspect=30, pad=0.01)
    if path is not None:
        save_figure(fig, path)
    return fig


def _hbars(ax, table, value: str, strategies: Sequence[str], styles, seeds, *, xlabel: str) -> None:
    """Horizontal bars per strategy with ± sd error bars and one dot per seed."""
    y = np.arange(len(strategies))
    for k, strat in enumerate(strategies):
        r = table[table["strategy"] == strat].iloc[0]
        st, m, sd = styles[strat], r[f"{value}_mean"], r[f"{value}_sd"]
        if not np.isfinite(m):
            continue
        ax.barh(k, m, height=0.7, color=st.color, hatch=st.hatch, edgecolor="white" if not st.hatch else "black",
                linewidth=0.4, label=strat)
        if np.isfinite(sd):
            ax.errorbar(m, k, xerr=sd, color="black", capsize=2, linewidth=0.9, capthick=0.9)
        pts = seeds[seeds["strategy"] == strat][value].to_numpy(dtype=float)
        if len(pts) > 1:
            jitter = np.linspace(-0.18, 0.18, len(pts))
            ax.scatter(pts, k + jitter, s=5, color="black", zorder=3, linewidths=0)
    ax.set_yticks(y, strategies)
    ax.set_ylim(len(strategies) - 0.4, -0.6)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)


@_styled
def plot_final_accuracy_forgetting(data: RunData, path: Path | None = None, *,
                                   styles: dict[str, Style] | None = None) -> Figure:
    """Final accuracy and average forgetting per strategy: bars ± sd over seeds, dots = seeds."""
    styles = _styles(data, styles)
    table = agg.summary_table(data)
    runs = data.runs
    n_strat = [table[table["run"] == r]["strategy"].nunique() for r in runs]
    fig = _new_figure(PAGE_WIDTH_IN, 0.55 + sum(0.4 + 0.24 * n for n in n_strat))
    axes = fig.subplots(len(runs), 2, squeeze=False,
                        gridspec_kw={"height_ratios": [n + 1.6 for n in n_strat]})
    for (ax_acc, ax_fgt), run in zip(axes, runs):
        t = table[table["run"] == run]
        seeds = data.summary[data.summary["run"] == run]
        strategies = agg.strategy_order(t["strategy"])
        _hbars(ax_acc, t, "final_accuracy", strategies, styles, seeds, xlabel="final accuracy")
        _hbars(ax_fgt, t, "average_forgetting", strategies, styles, seeds,
               xlabel="average forgetting (lower is better)")
        ax_acc.set_xlim(0, 1)
        lo = min(0.0, float(np.nanmin(seeds["average_forgetting"])))
        hi = max(float(np.nanmax(seeds["average_forgetting"])), 0.05)
        ax_fgt.set_xlim(lo * 1.1, hi * 1.1)
        ax_fgt.tick_params(labelleft=False)
        if len(runs) > 1:
            ax_acc.set_title(_title_run(data, run), loc="left")
    n = data.summary.groupby(["run", "strategy"])["cell"].nunique()
    head = "Where each strategy ends" + ("" if len(runs) > 1 else f": {_title_run(data, runs[0])}")
    note = "bars: mean; whiskers: ± sd; dots: seeds" if n.max() > 1 else "one seed, no spread shown"
    fig.suptitle(f"{head} ({note})")
    if path is not None:
        save_figure(fig, path)
    return fig


@_styled
def plot_cost(data: RunData, path: Path | None = None, *,
              styles: dict[str, Style] | None = None) -> Figure:
    """Training time, evaluation time (and peak memory when recorded) per strategy."""
    styles = _styles(data, styles)
    table = agg.summary_table(data)
    runs = data.runs
    values = [("train_seconds", "training time (s)"), ("eval_seconds", "evaluation time (s)")]
    if data.summary["peak_memory_mb"].notna().any():
        values.append(("peak_memory_mb", "peak memory (MB)"))
    n_strat = [table[table["run"] == r]["strategy"].nunique() for r in runs]
    fig = _new_figure(PAGE_WIDTH_IN, 0.6 + sum(0.45 + 0.24 * n for n in n_strat))
    axes = fig.subplots(len(runs), len(values), squeeze=False,
                        gridspec_kw={"height_ratios": [n + 1.8 for n in n_strat]})
    for row, run in zip(axes, runs):
        t = table[table["run"] == run]
        seeds = data.summary[data.summary["run"] == run]
        strategies = agg.strategy_order(t["strategy"])
        for k, (ax, (value, label)) in enumerate(zip(row, values)):
            _hbars(ax, t, value, strategies, styles, seeds, xlabel=label)
            v = seeds[value].to_numpy(dtype=float)
            v = v[np.isfinite(v) & (v > 0)]
            if len(v) and v.max() / v.min() > 30:
                _log_axis(ax, v)
                ax.set_xlabel(label.replace("(s)", "(s, log scale)"))
            if k:
                ax.tick_params(labelleft=False)
        if len(runs) > 1:
            row[0].set_title(_title_run(data, run), loc="left")
    n = data.summary.groupby(["run", "strategy"])["cell"].nunique()
    head = "Cost over the whole stream" + ("" if len(runs) > 1 else f": {_title_run(data, runs[0])}")
    note = "bars: mean; whiskers: ± sd; dots: seeds" if n.max() > 1 else "one seed"
    fig.suptitle(f"{head} ({note})")
    if path is not None:
        save_figure(fig, path)
    return fig


def has_inference(data: RunData) -> bool:
    """True when some cell recorded inference settings with a cost per image."""
    inf = data.inference
    return not inf.empty and inf["seconds_per_image"].notna().any()


@_styled
def plot_inference_tradeoff(data: RunData, path: Path | None = None, *,
                            styles: dict[str, Style] | None = None) -> Figure:
    """Accuracy against seconds per image for each inference setting (the generative classifier)."""
    if not has_inference(data):
        raise UserError("no inference.csv with seconds_per_image in these runs; nothing to draw")
    styles = _styles(data, styles)
    table = agg.inference_table(data)
    table = table[np.isfinite(table["seconds_per_image_mean"])]
    settings = list(dict.fromkeys(table["setting"]))
    markers = {s: MARKERS[k % len(MARKERS)] for k, s in enumerate(settings)}
    runs = [r for r in data.runs if (table["run"] == r).any()]
    many_runs = len(data.runs) > 1
    fig = _new_figure(PAGE_WIDTH_IN if len(runs) > 1 else 5.6, 3.3)
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False).ravel()
    for ax, run in zip(axes, runs):
        for strat, g in table[table["run"] == run].groupby("strategy", sort=False):
            st = styles[strat]
            g = g.sort_values("seconds_per_image_mean")
            ax.plot(g["seconds_per_image_mean"], g["accuracy_mean"], color=st.color, alpha=0.6,
                    linewidth=0.9, linestyle=st.linestyle, zorder=1)
            for _, r in g.iterrows():
                xerr = r["seconds_per_image_sd"] if np.isfinite(r["seconds_per_image_sd"]) else None
                yerr = r["accuracy_sd"] if np.isfinite(r["accuracy_sd"]) else None
                if xerr is not None or yerr is not None:
                    ax.errorbar(r["seconds_per_image_mean"], r["accuracy_mean"], xerr=xerr, yerr=yerr,
                                color=st.color, linewidth=0.8, capsize=1.5, zorder=2)
                ax.scatter(r["seconds_per_image_mean"], r["accuracy_mean"], marker=markers[r["setting"]],
                           s=30, color=st.color, edgecolors="black", linewidths=0.5, zorder=3)
        _log_axis(ax, table["seconds_per_image_mean"])
        ax.set_xlabel("seconds per test image (log scale)")
        if many_runs:
            ax.set_title(_title_run(data, run), loc="left")
    axes[0].set_ylabel("final accuracy on all classes")
    handles = [Line2D([], [], linestyle="", marker=markers[s], color="white", markeredgecolor="black",
                      markersize=5, label=s) for s in settings]
    strategies = agg.strategy_order(table["strategy"].unique())
    if len(strategies) > 1:
        handles += [Line2D([], [], linestyle="", marker="", label=""),
                    Line2D([], [], linestyle="", marker="", label="strategy")]
        handles += [Line2D([], [], color=styles[s].color, linestyle=styles[s].linestyle, label=s)
                    for s in strategies]
    # one legend (constrained layout makes room for an axes' own legend only)
    leg = axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                          frameon=False, title="inference setting")
    for text, h in zip(leg.get_texts(), handles):
        if not h.get_marker() and h.get_linestyle() in ("", "None"):
            text.set_x(-18)  # the section header starts under the legend title
    n = data.inference.groupby(["run", "strategy", "setting"])["cell"].nunique()
    title = "Accuracy against inference cost"
    if len(strategies) == 1 and not many_runs:
        title += f": {strategies[0]}"
    fig.suptitle(f"{title} ({_seeds_note(n.min(), n.max())})")
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- all at once

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def make_figures(run_dirs: Sequence[Path] | Path, out_dir: Path, fmt: str = "png") -> list[Path]:
    """Draw every figure of one or more run folders into ``out_dir``; return the written paths.

    Per-run figures (forgetting curves, accuracy matrices) get the run's name as a suffix when
    several runs are drawn; comparisons put the runs side by side in one figure.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown figure format {fmt!r}; use one of {', '.join(FORMATS)}")
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    data = read_runs([Path(p) for p in run_dirs])
    return draw_all(data, Path(out_dir), fmt)


def draw_all(data: RunData, out_dir: Path, fmt: str = "png") -> list[Path]:
    """:func:`make_figures` for data already read."""
    styles = strategy_styles(data.summary["strategy"].unique())
    out_dir = Path(out_dir)
    written: list[Path] = []
    suffix = (lambda run: f"_{_slug(run)}") if len(data.runs) > 1 else (lambda run: "")
    with matplotlib.rc_context(RC):
        for run in data.runs:
            for stem, fn in (("forgetting_curves", plot_forgetting_curves),
                             ("accuracy_matrix", plot_accuracy_matrices)):
                p = out_dir / f"{stem}{suffix(run)}.{fmt}"
                fn(data, p, run=run, styles=styles)
                written.append(p)
        for stem, fn in (("average_accuracy", plot_average_accuracy),
                         ("final_accuracy_forgetting", plot_final_accuracy_forgetting),
                         ("cost", plot_cost)):
            p = out_dir / f"{stem}.{fmt}"
            fn(data, p, styles=styles)
            written.append(p)
        if has_inference(data):
            p = out_dir / f"inference_tradeoff.{fmt}"
            plot_inference_tradeoff(data, p, styles=styles)
            written.append(p)
    return written
