"""Figures of a continual-learning run, drawn from its result files alone.

Every function takes a :class:`cil.results.RunData`, returns the matplotlib ``Figure`` (so
callers and tests can inspect axes and legends) and writes it when given a path. Figures are
built with the object-oriented API on a private Agg canvas: no pyplot state, no display.

Styling: sized for a two-column paper (7 in wide, 8-9 pt text), colours from the
colour-blind-safe "colorblind" palette of seaborn (Waskom 2021, after Wong 2011, Nature
Methods 8:441), and one fixed style per strategy *name* in every figure and every run
(:func:`strategy_style`). Units are those of the README: accuracy in %, forgetting in points,
times in minutes. Bands and error bars are ± one sample standard deviation over the cells
(seed × class order); a single cell draws none. An accuracy axis that does not start at 0 is
marked with a break on its spine and says where it starts.
"""

from __future__ import annotations

import colorsys
import functools
import io
import math
import re
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from cil.errors import UserError
from cil.report import aggregate as agg
from cil.results import RunData, atomic_write_bytes, read_runs

FORMATS = ("png", "pdf", "svg")
PAGE_WIDTH_IN = 7.0
DPI = 200
PCT = 100.0  # accuracies are fractions in the files, % (and points) in the figures

# seaborn "colorblind" without its yellow (it vanishes on white as a line), plus near-black
BLUE, ORANGE, GREEN, VERMILION, PURPLE = "#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC"
BROWN, PINK, GREY, SKY, BLACK = "#CA9161", "#FBAFE4", "#949494", "#56B4E9", "#303030"
PALETTE = [BLUE, ORANGE, GREEN, VERMILION, PURPLE, BROWN, PINK, GREY, SKY]
LINESTYLES = ["-", "--", "-.", ":"]
HATCHES = {"-": "", "--": "///", "-.": "...", ":": "xxx"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "d"]


def _shade(color: str, amount: float) -> str:
    """``color`` lighter (amount > 0) or darker (< 0), same hue: lightness moves ``amount`` of
    the way towards white or black."""
    h, l, s = colorsys.rgb_to_hls(*to_rgb(color))
    l = l + amount * (1 - l) if amount > 0 else l * (1 + amount)
    return to_hex(colorsys.hls_to_rgb(h, min(max(l, 0.0), 1.0), s))


#: Fixed colour, line style and marker of the strategies the suite ships. Families share a
#: hue: the VAR classifiers blue, GEM and A-GEM purple, the joint references near-black.
KNOWN_STYLES = {
    "naive": (GREY, "-", "o"), "ncm": (GREY, "--", "X"),
    "cumulative": (BLACK, "-", "s"), "joint": (BLACK, "--", "D"),
    "ewc": (ORANGE, "-", "^"), "si": (BROWN, "-", "v"), "lwf": (GREEN, "-", "P"),
    "replay": (VERMILION, "-", "o"), "gem": (PURPLE, "-", "s"), "agem": (PURPLE, "--", "D"),
    "icarl": (SKY, "-", "<"), "gdumb": (PINK, "-", "X"), "der": (SKY, "--", ">"),
    "slda": (BROWN, "--", "*"), "randumb": (BROWN, "-.", "h"), "vae_gc": (GREEN, "--", "d"),
    "varc": (BLUE, "-", "o"), "avarc": (_shade(BLUE, 0.4), "--", "s"),
    "avarc_plus": (_shade(BLUE, -0.45), "-.", "D"),
}
#: Shades (lightness moves) of a shipped strategy's colour for its variants (``replay_500``),
#: with the line style and marker that go with each.
VARIANT_SHADES = [(-0.45, "--", "s"), (0.3, ":", "^"), (-0.2, "-.", "D"), (0.5, "-.", "v")]

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


def _variant_shade(name: str, base: str) -> int:
    """Which shade a variant of ``base`` takes, from its name alone: a number in the suffix
    (``replay_200``, ``replay_500``) picks by its power of two, so sizes that differ by a factor
    of two or more get different shades; other suffixes hash."""
    number = re.search(r"\d+(?:\.\d+)?", name[len(base):])
    if number and float(number.group()) > 0:
        return int(math.floor(math.log2(float(number.group())))) % len(VARIANT_SHADES)
    return zlib.crc32(name.encode()) % len(VARIANT_SHADES)


@functools.lru_cache(maxsize=None)
def strategy_style(name: str) -> Style:
    """The style of one strategy name: the same in every figure and every run.

    Shipped strategies have fixed styles (:data:`KNOWN_STYLES`); a variant of one
    (``<base>_<suffix>``, e.g. ``replay_500``) takes a shade of its base's colour; any other name
    hashes (crc32, stable across processes and machines) to a colour of the palette, a line
    style and a marker. The style depends on the name only (:func:`strategy_styles`, which
    styles the strategies of one figure, may change a hashed name's line style and marker, never
    its colour, so that no two keys in the figure are equal).
    """
    if name in KNOWN_STYLES:
        color, ls, marker = KNOWN_STYLES[name]
        return Style(color, ls, HATCHES[ls], marker)
    base = agg.variant_of(name)
    if base in KNOWN_STYLES:
        amount, ls, marker = VARIANT_SHADES[_variant_shade(name, base)]
        return Style(_shade(KNOWN_STYLES[base][0], amount), ls, HATCHES[ls], marker)
    known = set(KNOWN_STYLES.values())
    h = zlib.crc32(name.encode())
    for k in range(len(MARKERS)):  # never the exact look of a shipped strategy
        color = PALETTE[h % len(PALETTE)]
        ls = LINESTYLES[(h // len(PALETTE)) % 3]
        marker = MARKERS[(h // (3 * len(PALETTE)) + k) % len(MARKERS)]
        if (color, ls, marker) not in known:
            break
    return Style(color, ls, HATCHES[ls], marker)


def _hashed(name: str) -> bool:
    """True when ``name``'s style comes from its hash (neither shipped nor a shipped variant)."""
    return name not in KNOWN_STYLES and agg.variant_of(name) not in KNOWN_STYLES


def strategy_styles(names: Iterable[str]) -> dict[str, Style]:
    """:func:`strategy_style` of each name, with one exception: a hashed name (an ablation's
    rows, a plugin's strategies) whose colour, line style and marker all equal those of another
    name drawn with it takes, in alphabetical order, the next line style and marker nobody in the
    figure has. Colours never move, so a name keeps its colour in every run; its key (colour,
    line style, marker, as in the legends and beside the panel titles) is never shared."""
    order = agg.strategy_order(str(n) for n in names)
    styles = {n: strategy_style(n) for n in order}
    looks = {(st.color, st.linestyle, st.marker) for n, st in styles.items() if not _hashed(n)}
    for name in sorted(n for n in order if _hashed(n)):
        st = styles[name]
        l0, m0 = LINESTYLES.index(st.linestyle), MARKERS.index(st.marker)
        for k in range(1, 3 * len(MARKERS)):
            if (st.color, st.linestyle, st.marker) not in looks:
                break
            ls = LINESTYLES[(l0 + k) % 3]
            st = Style(st.color, ls, HATCHES[ls], MARKERS[(m0 + k // 3) % len(MARKERS)])
        styles[name] = st
        looks.add((st.color, st.linestyle, st.marker))
    return styles


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
    room = max(12, int(PAGE_WIDTH_IN / cols * 11) - 5)  # the key after the name takes three
    if len(name) <= room:
        return name
    head = (room - 1) // 2
    return name[:head] + "…" + name[len(name) - (room - 1 - head):]


def _band(ax, x, mean, sd, color, alpha=0.18, top: float = PCT) -> None:
    """± sd band, only where sd is defined (two or more cells)."""
    sd = np.asarray(sd, dtype=float)
    if np.isfinite(sd).any():
        lo = np.clip(np.asarray(mean) - sd, 0, top)
        hi = np.clip(np.asarray(mean) + sd, 0, top)
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, linewidth=0,
                        where=np.isfinite(sd), interpolate=False)


def _int_ticks(ax, T: int, axis: str = "x") -> None:
    step = 1 if T <= 12 else math.ceil(T / 10)
    ticks = list(range(0, T, step))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks)


def _cell_text(v: float) -> str:
    """An accuracy (a fraction) as a whole percentage: ``83``; ``100`` only for what rounds to it."""
    return f"{v * PCT:.0f}"


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


def _panel_title(ax, name: str, style: Style, cols: int) -> None:
    """Strategy name over a panel, followed by the strategy's key as in the line figures'
    legends (colour, line style and marker, so strategies that share a hue stay apart); both sit
    above the axes, apart from the data."""
    from matplotlib.offsetbox import AnnotationBbox, DrawingArea

    title = ax.set_title(_fit(name, cols), loc="left", fontsize=8.5, pad=4)
    key = DrawingArea(16, 6)
    key.add_artist(Line2D([0, 16], [3, 3], color=style.color, linestyle=style.linestyle, linewidth=1.4))
    key.add_artist(Line2D([8], [3], marker=style.marker, color=style.color, markeredgecolor="black",
                          markeredgewidth=0.4, markersize=4.5))
    ax.add_artist(AnnotationBbox(key, xy=(1, 0.5), xycoords=title, xybox=(4, 0), boxcoords="offset points",
                                 box_alignment=(0, 0.5), frameon=False, pad=0, annotation_clip=False))


def _bottom_labels(axes, used: int, cols: int, xlabel: str, ylabel: str) -> None:
    """x label under the lowest visible panel of each column, y label on the first column."""
    for k in range(used):
        ax = axes[k]
        ax.tick_params(labelbottom=True)
        if k + cols >= used:
            ax.set_xlabel(xlabel)
        if k % cols == 0:
            ax.set_ylabel(ylabel)


def _cells(summary) -> tuple[int, int, bool]:
    """(fewest, most) cells per (run, strategy), and whether some strategy has several class orders."""
    g = summary.groupby(["run", "strategy"])
    n = g["cell"].nunique()
    return int(n.min()), int(n.max()), bool((g["order"].nunique() > 1).any())


def _spread_note(summary, *, what: str = "mean ± sd") -> str:
    """``1 seed, no spread shown`` or ``mean ± sd over 3 seeds`` (cells = seed × class order)."""
    n_min, n_max, orders = _cells(summary)
    unit = "cells (seed × class order)" if orders else "seeds"
    if n_max <= 1:
        return "1 seed, no spread shown"
    count = f"{n_min}" if n_min == n_max else f"{n_min}-{n_max}"
    return f"{what} over {count} {unit}"


def _title_run(data: RunData, run: str) -> str:
    protos = data.summary.loc[data.summary["run"] == run, "protocol"].astype(str).unique()
    proto = ", ".join(protos)
    return proto if proto == run else f"{run}, protocol {proto}"


def _suptitle(fig: Figure, head: str, note: str = ""):
    """The figure's title, kept inside the canvas: ``head (note)`` on one line when it fits, else
    broken after the title's colon and before the note, else wrapped (last resort: smaller)."""
    renderer = fig.canvas.get_renderer()
    room = 0.96 * fig.bbox.width
    title = fig.suptitle("")

    def fits(lines: list[str]) -> bool:
        title.set_text("\n".join(lines))
        return title.get_window_extent(renderer).width <= room

    name, colon, rest = head.partition(": ")
    tail = f"({note})" if note else ""
    layouts = [[f"{head} {tail}".strip()], [head, tail], [name + colon, f"{rest} {tail}".strip()],
               [name + colon, rest, tail]]
    for lines in layouts:
        if fits([line for line in lines if line]):
            return title
    lines = [line for line in layouts[-1] if line]
    chars = max(len(line) for line in lines)
    while not fits(lines) and chars > 12:
        chars = int(chars * room / title.get_window_extent(renderer).width) - 1
        lines = [w for line in layouts[-1] if line for w in textwrap.wrap(line, chars, break_long_words=True)]
    while title.get_window_extent(renderer).width > room and title.get_fontsize() > 6:
        title.set_fontsize(title.get_fontsize() - 0.5)
    return title


def _zoom_range(values: Sequence[float], *, top: float = PCT, cut: float = 0.6) -> tuple[float, float]:
    """y limits for accuracies in % (or forgetting in points): the whole 0-100 scale, unless all
    values lie in its upper part (above ``cut`` of it), then zoomed to them, ending at ``top``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v) or v.min() < cut * top:
        return -0.02 * top, 1.02 * top
    span = max(top - v.min(), 0.02 * top)
    step = next(s for s in (0.5, 1, 2, 5, 10, 20) if span / s <= 6)
    lo = math.floor((v.min() - 0.12 * span) / step) * step
    lo = max(lo, 0.0)
    return lo, top + 0.03 * (top - lo)


def _mark_zoom(ax, lo: float) -> None:
    """A break on the y spine when the axis does not start at 0 (drawn outside the data)."""
    if lo <= 0:
        return
    ax.plot([0, 0], [0.012, 0.04], marker=[(-1, -0.5), (1, 0.5)], markersize=7, linestyle="none",
            color="black", mec="black", mew=0.9, clip_on=False, transform=ax.transAxes, zorder=6)


def _zoom_label(label: str, lo: float) -> str:
    return label if lo <= 0 else f"{label}\n(axis cut: starts at {lo:g}%)"


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
    width = min(PAGE_WIDTH_IN, 1.6 + 1.9 * cols)
    fig = _new_figure(width, 0.8 + 1.75 * rows + (1.0 if width < 4.6 else 0.0))  # narrow: titles wrap
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    sd = curves["accuracy_sd"].fillna(0)
    lo, hi = _zoom_range(np.concatenate([(curves["accuracy_mean"] - sd) * PCT, curves["accuracy_mean"] * PCT]))
    for ax, strat in zip(axes, strategies):
        sub = curves[curves["strategy"] == strat]
        for j in range(T):
            e = sub[sub["eval_exp"] == j].sort_values("train_exp")
            if e.empty:
                continue
            x, m = e["train_exp"].to_numpy(), e["accuracy_mean"].to_numpy() * PCT
            ax.plot(x, m, color=exp_colors[j], marker="o", markersize=2.5, label=f"exp {j}")
            _band(ax, x, m, e["accuracy_sd"].to_numpy() * PCT, exp_colors[j], alpha=0.15)
        _panel_title(ax, strat, styles[strat], cols)
        ax.set_ylim(lo, hi)
        ax.set_xlim(-0.3, T - 0.7)
        _int_ticks(ax, T)
    _hide_unused(axes, len(strategies))
    _bottom_labels(axes, len(strategies), cols, "after training exp. i",
                   _zoom_label("accuracy on exp. j (%)", lo))
    for k in range(0, len(strategies), cols):
        _mark_zoom(axes[k], lo)
    _suptitle(fig, f"Forgetting curves: {_title_run(data, run)}",
              _spread_note(data.summary[data.summary["run"] == run]))
    key = "accuracy on experience j (each line starts when j is trained)"
    if width < 4.6:
        key = "accuracy on experience j\n(each line starts when j is trained)"
    if T <= 12:
        handles = [Line2D([], [], color=exp_colors[j], marker="o", markersize=3, label=f"exp {j}")
                   for j in range(T)]
        fit = max(1, min(6, int((width - 0.3) / 0.85)))  # entries that fit on one row
        per_row = T if T <= fit else math.ceil(T / math.ceil(T / fit))
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


def _legend_height(n_entries: int) -> float:
    """Inches a one-column strategy legend of ``n_entries`` needs (its title included)."""
    return 0.9 + 0.2 * n_entries


def _strategy_legend(ax, shown: dict[str, Line2D], same_as: dict[str, str] | None = None) -> None:
    """One legend entry per strategy, in the suite's strategy order, right of the panel; a
    strategy whose curve hides under another's says so (``same_as``)."""
    order = agg.strategy_order(shown)
    labels = [f"{k} (≈ {same_as[k]})" if same_as and k in same_as else k for k in order]
    ax.legend([shown[k] for k in order], labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
              title="strategy")


COINCIDE = 0.006  # mean curves closer than this fraction of the axis height at every point hide each other


def _coinciding(curves, spans: dict[str, float]) -> dict[str, str]:
    """strategy -> the first strategy (in the suite's order) whose mean curve lies within
    COINCIDE of the axis height of its own at every point of every run: the legend names the curve
    it hides under. ``spans``: the height (points) of the finest axis each strategy is drawn on."""
    wide = curves.pivot_table(index=["run", "train_exp"], columns="strategy", values="accuracy_mean") * PCT
    out: dict[str, str] = {}
    firsts: list[str] = []
    for strat in agg.strategy_order(wide.columns):
        a = wide[strat]
        match = next((f for f in firsts if a.isna().equals(wide[f].isna()) and float((a - wide[f]).abs().max())
                      < COINCIDE * max(spans[strat], spans[f])), None)
        if match is None:
            firsts.append(strat)
        else:
            out[strat] = match
    return out


def _leaders(curves) -> list[str]:
    """Strategies whose mean final accuracy is within agg.LEADING_PTS of the best (one run's curves)."""
    last = curves[curves["train_exp"] == curves["train_exp"].max()].set_index("strategy")["accuracy_mean"] * PCT
    return [s for s in agg.strategy_order(last.index) if last[s] >= last.max() - agg.LEADING_PTS]


@_styled
def plot_average_accuracy(data: RunData, path: Path | None = None, *,
                          styles: dict[str, Style] | None = None) -> Figure:
    """Mean accuracy on all seen experiences after each experience; all strategies on one axis per
    run, the runs side by side on shared axes. With one run on the full 0-100 scale, a second
    panel zooms on the strategies that end within agg.LEADING_PTS of the best, where the curves crowd."""
    curves = agg.seen_accuracy_curves(data)
    styles = _styles(data, styles)
    runs = data.runs

    def y_range(c):
        return _zoom_range(np.concatenate([(c["accuracy_mean"] - c["accuracy_sd"].fillna(0)) * PCT,
                                           c["accuracy_mean"] * PCT]))

    lo, hi = y_range(curves)
    leaders = _leaders(curves) if len(runs) == 1 else []
    zoom = curves[curves["strategy"].isin(leaders)]
    if not (lo <= 0 and 2 <= len(leaders) < curves["strategy"].nunique() and y_range(zoom)[0] > 0):
        zoom = None
    rows, cols = _grid(len(runs), 3)
    width = PAGE_WIDTH_IN if len(runs) > 1 or zoom is not None else 5.6
    fig = _new_figure(width, max(0.6 + 2.7 * rows, _legend_height(curves["strategy"].nunique())))
    lengths = {int(curves.loc[curves["run"] == r, "train_exp"].max()) + 1 for r in runs}
    if zoom is not None:
        axes = fig.subplots(1, 2, sharex=True, squeeze=False).ravel()
        cols = 2
    else:
        axes = fig.subplots(rows, cols, sharey=True, sharex=len(lengths) == 1, squeeze=False).ravel()
    shown: dict[str, Line2D] = {}
    panels = [(ax, run, curves[curves["run"] == run], (lo, hi)) for ax, run in zip(axes, runs)]
    if zoom is not None:
        panels.append((axes[1], runs[0], zoom, y_range(zoom)))
    for ax, run, sub, (ylo, yhi) in panels:
        T = int(sub["train_exp"].max()) + 1
        for strat in agg.strategy_order(sub["strategy"].unique()):
            s, st = sub[sub["strategy"] == strat].sort_values("train_exp"), styles[strat]
            x, m = s["train_exp"].to_numpy(), s["accuracy_mean"].to_numpy() * PCT
            (line,) = ax.plot(x, m, color=st.color, linestyle=st.linestyle, marker=st.marker,
                              label=strat)
            _band(ax, x, m, s["accuracy_sd"].to_numpy() * PCT, st.color, alpha=0.14)
            shown.setdefault(strat, line)
        ax.set_xlabel("after training experience i")
        ax.set_ylim(ylo, yhi)
        ax.set_xlim(-0.2, max(lengths) - 0.8)
        _int_ticks(ax, T)
        if len(runs) > 1:
            ax.set_title(_title_run(data, run), loc="left")
        if zoom is not None or ax in list(axes[::cols]):
            ax.set_ylabel(_zoom_label("accuracy on seen experiences (%)", ylo))
            _mark_zoom(ax, ylo)
    if zoom is not None:
        axes[0].set_title("all strategies", loc="left")
        axes[1].set_title(f"zoom: within {agg.LEADING_PTS:g} points of the best at the end", loc="left")
    _hide_unused(axes, len(panels))
    head = "Average accuracy over the stream" + ("" if len(runs) > 1 else f": {_title_run(data, runs[0])}")
    _suptitle(fig, head, _spread_note(data.summary))
    spans = {strat: yhi - ylo for _, _, sub, (ylo, yhi) in panels for strat in sub["strategy"].unique()}
    _strategy_legend(axes[min(cols, len(panels)) - 1], shown, _coinciding(curves, spans))
    if path is not None:
        save_figure(fig, path)
    return fig


UNTRAINED = dict(facecolor="#f2f2f2", hatch="////", hatchcolor="#b8b8b8", edgecolor="none", linewidth=0)


@_styled
def plot_accuracy_matrices(data: RunData, path: Path | None = None, *, run: str | None = None,
                           styles: dict[str, Style] | None = None) -> Figure:
    """Heatmap of the accuracy matrix R[i][j] in % (mean over cells), annotated, one panel per
    strategy; cells of experiences not trained yet (j > i) are hatched, not coloured."""
    run = _one_run(data, run)
    styles = _styles(data, styles)
    a = data.accuracy[data.accuracy["run"] == run]
    strategies = agg.strategy_order(a["strategy"].unique())
    T = int(a["train_exp"].max()) + 1
    rows, cols = _grid(len(strategies), names=strategies)
    fig = _new_figure(min(PAGE_WIDTH_IN, 1.6 + 1.85 * cols), 0.9 + 1.85 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    cmap = matplotlib.colormaps["cividis"].with_extremes(bad=UNTRAINED["facecolor"])
    font = 7 if T <= 5 else 5.5 if T <= 8 else 4.2 if T <= 12 else None
    untrained = np.triu(np.ones((T, T), dtype=bool), k=1)  # j > i
    image = None
    for ax, strat in zip(axes, strategies):
        mean, _sd, _n = agg.mean_matrix(data, run, strat)
        shown = np.ma.masked_array(mean * PCT, mask=untrained | ~np.isfinite(mean))
        image = ax.imshow(shown, vmin=0, vmax=PCT, cmap=cmap, aspect="equal", interpolation="nearest")
        for i, j in zip(*np.nonzero(untrained)):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, **UNTRAINED))
        if font:
            for i in range(T):
                for j in range(i + 1):
                    v = mean[i, j]
                    if np.isfinite(v):
                        ax.text(j, i, _cell_text(v), ha="center", va="center", fontsize=font,
                                color="white" if v < 0.55 else "black")
        _panel_title(ax, strat, styles[strat], cols)
        ax.grid(False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        _int_ticks(ax, T, "x")
        _int_ticks(ax, T, "y")
        ax.tick_params(length=0, pad=1.5)
    _hide_unused(axes, len(strategies))
    for k in range(len(strategies)):
        if k + cols >= len(strategies):
            axes[k].set_xlabel("tested on experience j")
    if cols == 1:  # a short panel: the label on two lines stays beside it
        for ax in axes[: len(strategies)]:
            ax.set_ylabel("after training\nexperience i")
    else:
        fig.supylabel("after training experience i", fontsize=8.5)
    summary = data.summary[data.summary["run"] == run]
    n_min, n_max, _orders = _cells(summary)
    note = ("1 seed" if n_max <= 1 else _spread_note(summary, what="mean").replace(", no spread shown", ""))
    _suptitle(fig, f"Accuracy matrix R[i][j] (%): {_title_run(data, run)}", note)
    if image is not None:
        fig.colorbar(image, ax=axes[: len(strategies)].tolist(), shrink=0.8, label="accuracy (%)",
                     aspect=30, pad=0.01)
    fig.legend(handles=[Patch(**UNTRAINED, label="experience j not trained yet (j > i)")],
               loc="outside lower center", frameon=False)
    if path is not None:
        save_figure(fig, path)
    return fig


def _hbars(ax, table, value: str, strategies: Sequence[str], styles, seeds, *, xlabel: str,
           factor: float = 1.0, labels=None) -> None:
    """Horizontal bars per strategy with ± sd error bars, one dot per cell, and (``labels``: a
    format or a function) the mean written at the end of the bar, with its number of cells
    where that is fewer than another strategy's in the panel (a grid still under way)."""
    y = np.arange(len(strategies))
    n_full = max((len(seeds[seeds["strategy"] == s]) for s in strategies), default=0)
    for k, strat in enumerate(strategies):
        r = table[table["strategy"] == strat].iloc[0]
        st, m, sd = styles[strat], r[f"{value}_mean"] * factor, r[f"{value}_sd"] * factor
        if not np.isfinite(m):
            continue
        ax.barh(k, m, height=0.7, color=st.color, hatch=st.hatch, edgecolor="white" if not st.hatch else "black",
                linewidth=0.4, label=strat)
        if np.isfinite(sd):
            ax.errorbar(m, k, xerr=sd, color="black", capsize=2, linewidth=0.9, capthick=0.9)
        pts = seeds[seeds["strategy"] == strat][value].to_numpy(dtype=float) * factor
        if len(pts) > 1:
            jitter = np.linspace(-0.18, 0.18, len(pts))
            ax.scatter(pts, k + jitter, s=5, color="black", zorder=3, linewidths=0)
        if labels:
            end = max(m + (sd if np.isfinite(sd) else 0), np.nanmax(pts) if len(pts) else m, m, 0)
            text = labels(m) if callable(labels) else labels.format(m)
            if len(pts) < n_full:
                text += f" (n = {len(pts)})"
            ax.annotate(text, xy=(end, k), xytext=(3, 0), textcoords="offset points",
                        ha="left", va="center", fontsize=6.5, color="#333333")
    ax.set_yticks(y, strategies)
    ax.set_ylim(len(strategies) - 0.4, -0.6)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)


@_styled
def plot_final_accuracy_forgetting(data: RunData, path: Path | None = None, *,
                                   styles: dict[str, Style] | None = None) -> Figure:
    """Final accuracy (%) and average forgetting (points) per strategy: bars ± sd over cells,
    dots = cells, the mean written at each bar's end; one row per run, columns share their axis."""
    styles = _styles(data, styles)
    table = agg.summary_table(data)
    runs = data.runs
    n_strat = [table[table["run"] == r]["strategy"].nunique() for r in runs]
    fig = _new_figure(PAGE_WIDTH_IN, 0.7 + sum(0.4 + 0.24 * n for n in n_strat))
    axes = fig.subplots(len(runs), 2, squeeze=False, sharex="col",
                        gridspec_kw={"height_ratios": [n + 1.6 for n in n_strat]})
    f = data.summary["average_forgetting"] * PCT
    f_lo, f_hi = min(0.0, float(np.nanmin(f))), max(float(np.nanmax(f)), 5.0)
    for (ax_acc, ax_fgt), run in zip(axes, runs):
        t = table[table["run"] == run]
        seeds = data.summary[data.summary["run"] == run]
        strategies = agg.strategy_order(t["strategy"])
        _hbars(ax_acc, t, "final_accuracy", strategies, styles, seeds, xlabel="final accuracy (%)",
               factor=PCT, labels="{:.1f}")
        _hbars(ax_fgt, t, "average_forgetting", strategies, styles, seeds,
               xlabel="average forgetting (points, lower is better)", factor=PCT, labels="{:.1f}")
        ax_acc.set_xlim(0, 1.14 * PCT)
        ax_acc.set_xticks(np.arange(0, PCT + 1, 20))
        ax_fgt.set_xlim(f_lo - 0.04 * (f_hi - f_lo), f_hi + 0.16 * (f_hi - f_lo))
        ax_fgt.tick_params(labelleft=False, labelbottom=True)
        ax_acc.tick_params(labelbottom=True)
        if f_lo < 0:
            ax_fgt.axvline(0, color="black", linewidth=0.6)
        if len(runs) > 1:
            ax_acc.set_title(_title_run(data, run), loc="left")
    head = "Where each strategy ends" + ("" if len(runs) > 1 else f": {_title_run(data, runs[0])}")
    n_min, n_max, _o = _cells(data.summary)
    note = ("bars: mean; whiskers: ± sd; dots: " + ("cells" if _o else "seeds")) if n_max > 1 \
        else "1 seed, no spread shown"
    _suptitle(fig, head, note)
    if path is not None:
        save_figure(fig, path)
    return fig


COST_VALUES = [("train_seconds", "training time (min)", 1 / 60), ("eval_seconds", "evaluation time (min)", 1 / 60)]


def _short_number(v: float) -> str:
    """A bar's value in two or three significant figures, never in exponent form."""
    if not np.isfinite(v):
        return ""
    if abs(v) >= 10:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}"
    return f"{v:.2g}"


@_styled
def plot_cost(data: RunData, path: Path | None = None, *,
              styles: dict[str, Style] | None = None) -> Figure:
    """Training and evaluation time (minutes, over the whole stream) and, when recorded, each
    strategy's peak memory above its run's baseline (the lowest peak of any strategy in the run:
    the recorded peak is the whole process's, mostly torch). One scale per column, shared by
    the runs."""
    styles = _styles(data, styles)
    runs = data.runs
    summary = data.summary
    values = list(COST_VALUES)
    baselines: dict[str, tuple[float, str]] = {}
    if summary["peak_memory_mb"].notna().any():
        relative = agg.memory_above_baseline(data)
        if relative is not None:
            summary, baselines = relative
            values.append(("peak_memory_mb", "memory above\nbaseline (MB)", 1.0))
        else:
            values.append(("peak_memory_mb", "peak memory of\nthe process (MB)", 1.0))
    table = agg.summary_stats(summary, runs)
    n_strat = [table[table["run"] == r]["strategy"].nunique() for r in runs]
    fig = _new_figure(PAGE_WIDTH_IN, 0.8 + sum(0.55 + 0.24 * n for n in n_strat))
    axes = fig.subplots(len(runs), len(values), squeeze=False, sharex="col",
                        gridspec_kw={"height_ratios": [n + 2.0 for n in n_strat]})
    for k, (value, label, factor) in enumerate(values):
        v = summary[value].to_numpy(dtype=float) * factor
        v = v[np.isfinite(v) & (v > 0)]
        log = value != "peak_memory_mb" and len(v) > 0 and v.max() / v.min() > 30
        for row, run in zip(axes, runs):
            ax = row[k]
            t = table[table["run"] == run]
            seeds = summary[summary["run"] == run]
            strategies = agg.strategy_order(t["strategy"])
            _hbars(ax, t, value, strategies, styles, seeds,
                   xlabel=label + ("\n(log scale)" if log else ""), factor=factor,
                   labels=_short_number)
            if log:
                _log_axis(ax, v)
            if k:
                ax.tick_params(labelleft=False)
            ax.tick_params(labelbottom=True)
            if value == "peak_memory_mb" and baselines:
                base, where = baselines[run]
                ax.set_title(f"baseline {base:,.0f} MB\n= {where}", loc="right", fontsize=7,
                             color="#444444")
        if log:  # room for the labels at the bars' ends
            axes[0][k].set_xlim(v.min() / 1.6, v.max() * (v.max() / v.min()) ** 0.22)
        elif len(v):
            axes[0][k].set_xlim(0, v.max() * 1.2)
    for row, run in zip(axes, runs):
        if len(runs) > 1:
            row[0].set_title(_title_run(data, run), loc="left")
    head = "Cost over the whole stream" + ("" if len(runs) > 1 else f": {_title_run(data, runs[0])}")
    n_min, n_max, _o = _cells(data.summary)
    note = ("bars: mean; whiskers: ± sd; dots: " + ("cells" if _o else "seeds")) if n_max > 1 else "1 seed, no spread shown"
    _suptitle(fig, head, note)
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
    """Accuracy (%) against milliseconds per image for each inference setting (the generative
    classifier); the runs side by side on shared axes."""
    if not has_inference(data):
        raise UserError("no inference.csv with seconds_per_image in these runs; nothing to draw")
    styles = _styles(data, styles)
    table = agg.inference_table(data)
    # against every class learnt (the rows against the first N classes are for the table)
    table = table[table["classes"] == table.groupby(["run", "strategy"])["classes"].transform("max")]
    table = table[np.isfinite(table["seconds_per_image_mean"])].copy()
    for c in ("accuracy_mean", "accuracy_sd"):
        table[c] = table[c] * PCT
    for c in ("seconds_per_image_mean", "seconds_per_image_sd"):
        table[c] = table[c] * 1000.0
    settings = list(dict.fromkeys(table["setting"]))
    markers = {s: MARKERS[k % len(MARKERS)] for k, s in enumerate(settings)}
    # one setting: the marker tells the strategies apart (as in the line figures), not the setting
    one_setting = len(settings) == 1
    runs = [r for r in data.runs if (table["run"] == r).any()]
    many_runs = len(data.runs) > 1
    ms = table["seconds_per_image_mean"].to_numpy(dtype=float)
    sd = np.nan_to_num(table["seconds_per_image_sd"].to_numpy(dtype=float))
    # x limits: every marker and every whisker's upper end; a whisker reaching below the
    # left edge (sd over the mean, e.g. one cell timed on a busy machine) stops at it
    x_lo, x_hi = np.nanmin(ms) / 1.25, np.nanmax(ms + sd) * 1.1
    strategies = agg.strategy_order(table["strategy"].unique())
    # the legend: the strategies (one setting), or the settings, then a header and the strategies
    n_entries = len(strategies) if one_setting else len(settings) + (2 + len(strategies) if len(strategies) > 1 else 0)
    fig = _new_figure(PAGE_WIDTH_IN if len(runs) > 1 else 6.2, max(3.5, _legend_height(n_entries)))
    axes = fig.subplots(1, len(runs), sharey=True, sharex=True, squeeze=False).ravel()
    for ax, run in zip(axes, runs):
        for strat, g in table[table["run"] == run].groupby("strategy", sort=False):
            st = styles[strat]
            g = g.sort_values("seconds_per_image_mean")
            ax.plot(g["seconds_per_image_mean"], g["accuracy_mean"], color=st.color, alpha=0.6,
                    linewidth=0.9, linestyle=st.linestyle, zorder=1)
            for _, r in g.iterrows():
                m, e = r["seconds_per_image_mean"], r["seconds_per_image_sd"]
                xerr = [[min(e, m - x_lo)], [e]] if np.isfinite(e) else None
                yerr = r["accuracy_sd"] if np.isfinite(r["accuracy_sd"]) else None
                if xerr is not None or yerr is not None:
                    ax.errorbar(r["seconds_per_image_mean"], r["accuracy_mean"], xerr=xerr, yerr=yerr,
                                color=st.color, linewidth=0.8, capsize=1.5, zorder=2)
                marker = st.marker if one_setting else markers[r["setting"]]
                ax.scatter(r["seconds_per_image_mean"], r["accuracy_mean"], marker=marker,
                           s=30, color=st.color, edgecolors="black", linewidths=0.5, zorder=3)
        _log_axis(ax, table["seconds_per_image_mean"])
        if not many_runs:
            ax.set_xlabel("milliseconds per test image (log scale)")
        if many_runs:
            ax.set_title(_title_run(data, run), loc="left")
    axes[0].set_xlim(x_lo, x_hi)  # shared: every marker whole
    if many_runs:
        fig.supxlabel("milliseconds per test image (log scale)", fontsize=8.5)
    acc = table["accuracy_mean"].to_numpy(dtype=float)
    acc_sd = np.nan_to_num(table["accuracy_sd"].to_numpy(dtype=float))
    if np.nanmax(acc + acc_sd) - np.nanmin(acc - acc_sd) < 1.0:  # one point, or all within a point
        mid = (np.nanmax(acc + acc_sd) + np.nanmin(acc - acc_sd)) / 2
        axes[0].set_ylim(mid - 1.0, mid + 1.0)
    ticks = axes[0].get_yticks()
    step = float(np.diff(ticks).min()) if len(ticks) > 1 else 1.0
    lo = math.floor(axes[0].get_ylim()[0] / step) * step
    axes[0].set_ylim(lo, min(axes[0].get_ylim()[1], PCT + 0.5))  # never above 100%
    axes[0].set_ylabel(_zoom_label("accuracy on the timed test images (%)", float(f"{lo:.3g}")))
    _mark_zoom(axes[0], lo)
    if one_setting:
        handles = [Line2D([], [], color=styles[s].color, linestyle=styles[s].linestyle, marker=styles[s].marker,
                          markeredgecolor="black", markeredgewidth=0.5, markersize=5, label=s)
                   for s in strategies]
        legend_title = f"strategy (setting {settings[0]})"
    else:
        handles = [Line2D([], [], linestyle="", marker=markers[s], color="white", markeredgecolor="black",
                          markersize=5, label=s) for s in settings]
        legend_title = "inference setting"
        if len(strategies) > 1:
            handles += [Line2D([], [], linestyle="", marker="", label=""),
                        Line2D([], [], linestyle="", marker="", label="strategy")]
            handles += [Line2D([], [], color=styles[s].color, linestyle=styles[s].linestyle, label=s)
                        for s in strategies]
    # one legend (constrained layout makes room for an axes' own legend only)
    leg = axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                          frameon=False, title=legend_title)
    for text, h in zip(leg.get_texts(), handles):
        if not h.get_marker() and h.get_linestyle() in ("", "None"):
            text.set_x(-18)  # the section header starts under the legend title
    title = "Accuracy against inference cost"
    if len(strategies) == 1:
        title += f" of {strategies[0]}"
    if not many_runs:
        title += f": {_title_run(data, runs[0])}"
    n = data.inference.groupby(["run", "strategy", "setting"])["cell"].nunique()
    cells = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    note = "1 seed, no spread shown" if n.max() <= 1 else f"mean ± sd over {cells} cells"
    _suptitle(fig, title, note)
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- robustness

def has_robustness(data: RunData) -> bool:
    return data.robustness is not None and not data.robustness.empty


def _final_robustness(data: RunData):
    """The final model's rows of robustness.csv (the last experience each cell was scored after)."""
    rob = data.robustness
    last = rob.groupby(["run", "strategy", "cell"])["train_exp"].transform("max")
    return rob[rob["train_exp"] == last]


@_styled
def plot_robustness_severity(data: RunData, path: Path | None = None, *,
                             styles: dict[str, Style] | None = None) -> Figure:
    """Accuracy (%) of the final models against corruption severity (0: the same test images
    clean), mean over the corruptions; one line per strategy, ± sd over cells; runs side by side."""
    final = _final_robustness(data)
    per_cell = final.groupby(["run", "strategy", "cell", "severity"])["accuracy"].mean().reset_index()
    stats = per_cell.groupby(["run", "strategy", "severity"])["accuracy"].agg(["mean", "std"]).reset_index()
    styles = _styles(data, styles)
    runs = [r for r in data.runs if (stats["run"] == r).any()]
    rows, cols = _grid(len(runs), 3)
    fig = _new_figure(PAGE_WIDTH_IN if len(runs) > 1 else 5.6,
                      max(0.6 + 2.7 * rows, _legend_height(stats["strategy"].nunique())))
    axes = fig.subplots(rows, cols, sharey=True, sharex=True, squeeze=False).ravel()
    shown: dict[str, Line2D] = {}
    for ax, run in zip(axes, runs):
        sub = stats[stats["run"] == run]
        for strat in agg.strategy_order(sub["strategy"].unique()):
            t, st = sub[sub["strategy"] == strat].sort_values("severity"), styles[strat]
            x, m = t["severity"].to_numpy(), t["mean"].to_numpy() * PCT
            (line,) = ax.plot(x, m, color=st.color, linestyle=st.linestyle, marker=st.marker, label=strat)
            _band(ax, x, m, t["std"].to_numpy() * PCT, st.color, alpha=0.14)
            shown.setdefault(strat, line)
        ax.set_xlabel("severity (0: the same images, clean)")
        ax.set_ylim(0, PCT + 3)
        _int_ticks(ax, int(sub["severity"].max()) + 1)
        if len(runs) > 1:
            ax.set_title(_title_run(data, run), loc="left")
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy of the final model (%)")
    _hide_unused(axes, len(runs))
    corruptions = sorted(set(final["corruption"]) - {"none"})
    head = "Accuracy under corruption" + ("" if len(runs) > 1 else f": {_title_run(data, runs[0])}")
    _suptitle(fig, head, f"mean over {len(corruptions)} corruptions; {_spread_note(data.summary)}")
    _strategy_legend(axes[min(cols, len(runs)) - 1], shown)
    if path is not None:
        save_figure(fig, path)
    return fig


def robustness_drops(data: RunData, run: str):
    """Strategy x corruption: points lost from the clean images to the corrupted ones by the final
    model, mean over severities and cells (the same images, so the drop is the corruption's)."""
    final = _final_robustness(data)
    final = final[final["run"] == run]
    clean = final[final["severity"] == 0].set_index(["strategy", "cell"])["accuracy"]
    bad = final[final["severity"] > 0].copy()
    bad["drop"] = (clean.reindex(list(zip(bad["strategy"], bad["cell"]))).to_numpy() - bad["accuracy"]) * PCT
    table = bad.groupby(["strategy", "corruption"])["drop"].mean().unstack("corruption")
    return table.reindex(agg.strategy_order(table.index))


@_styled
def plot_robustness_drop(data: RunData, path: Path | None = None, *, run: str | None = None,
                         styles: dict[str, Style] | None = None) -> Figure:
    """Heatmap of the accuracy drop (points) from clean to corrupted test images, strategy x
    corruption, mean over severities and cells; darker is a larger drop."""
    run = _one_run(data, run)
    table = robustness_drops(data, run)
    n_s, n_c = table.shape
    fig = _new_figure(min(PAGE_WIDTH_IN, 2.2 + 0.42 * n_c), 1.4 + 0.3 * n_s)
    ax = fig.subplots()
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="magma_r", vmin=0, vmax=max(1.0, float(np.nanmax(values))), aspect="auto",
                      interpolation="nearest")
    for i in range(n_s):
        for j in range(n_c):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=6.5,
                        color="white" if values[i, j] > 0.6 * np.nanmax(values) else "black")
    ax.set_xticks(range(n_c), [c.replace("_", " ") for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(n_s), list(table.index))
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="accuracy drop (points)", shrink=0.9, pad=0.01)
    _suptitle(fig, f"Drop from clean under each corruption: {_title_run(data, run)}",
              "mean over severities and cells")
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- all at once

#: File stems of the figures, in the order they are drawn; per-run figures get ``_<run>``
#: appended when several runs are drawn.
PER_RUN_FIGURES = ("forgetting_curves", "accuracy_matrix", "robustness_drop")
FIGURES = PER_RUN_FIGURES + ("average_accuracy", "final_accuracy_forgetting", "cost", "inference_tradeoff",
                             "robustness_severity")


def figure_kind(path: Path) -> str | None:
    """Which figure a file written by :func:`draw_all` holds (its stem without the run suffix)."""
    stem = Path(path).stem
    return next((k for k in FIGURES if stem == k or stem.startswith(k + "_")), None)


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
        if has_robustness(data):
            p = out_dir / f"robustness_severity.{fmt}"
            plot_robustness_severity(data, p, styles=styles)
            written.append(p)
            for run in data.runs:
                if (data.robustness["run"] == run).any():
                    p = out_dir / f"robustness_drop{suffix(run)}.{fmt}"
                    plot_robustness_drop(data, p, run=run, styles=styles)
                    written.append(p)
    return written
