"""Figures, report and summary tables drawn from synthetic result folders."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from cil import results
from cil.cli import main
from cil.errors import UserError
from cil.report import aggregate as agg
from cil.report import plots
from cil.report.report import write_report

STRATEGIES = ["naive", "ewc", "varc"]
T = 3
SETTINGS = ["varc", "prune[4:3]"]


def _fill(out: Path, strategies, seeds, *, protocol: str, description: str | None = None) -> None:
    rng = np.random.default_rng(len(str(out)))
    for k, strategy in enumerate(strategies):
        for seed in seeds:
            R = np.tril(rng.uniform(min(0.1 + 0.2 * k, 0.9), 0.95, (T, T)))
            timings = [{"train_exp": i, "train_seconds": float(rng.uniform(1, 3) * (k + 1)),
                        "eval_seconds": float(rng.uniform(0.1, 0.2)), "peak_memory_mb": 200.0 + k}
                       for i in range(T)]
            inference = None
            if strategy == "varc":
                inference = [{"setting": s, "accuracy": float(rng.uniform(0.5, 0.9)),
                              "images_per_second": 100.0 / (n + 1), "token_forwards_per_image": 16 * (n + 1),
                              "seconds_per_image": 0.01 * (n + 1) * float(rng.uniform(0.9, 1.1))}
                             for n, s in enumerate(SETTINGS)]
            elif strategy in ABLATION[1:]:  # one cell timed on a busy machine: sd above the mean
                slow = 20.0 if (strategy, seed) == ("head_full_ds0_short", 1) else 1.0
                inference = [{"setting": "varc", "accuracy": float(rng.uniform(0.9, 0.99)),
                              "seconds_per_image": 0.002 * (k + 1) * slow * float(rng.uniform(0.9, 1.1))}]
            results.write_cell(out, protocol=protocol, strategy=strategy, seed=seed, accuracy_matrix=R,
                               timings=timings, metrics={}, inference=inference,
                               config={"name": protocol, "description": description, "dataset": "digits",
                                       "stream": {"n_experiences": T},
                                       "strategies": {strategy: {"strategy": strategy}},
                                       "run": {"strategy": strategy, "seed": seed, "device": "cpu", "threads": 1,
                                               "command": f"cil run {protocol} --only {strategy}",
                                               "class_order": list(range(2 * T)),
                                               "versions": {"python": "3.11", "numpy": np.__version__}}})
    results.write_summary(out)


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "digits_small"
    _fill(out, STRATEGIES, [0, 1, 2], protocol="digits_small")
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs1") / "one_seed"
    _fill(out, ["naive", "varc"], [4], protocol="one_seed")
    return out


def _legend_texts(fig) -> list[str]:
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    for ax in fig.axes:
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return texts


def _bands(fig) -> int:
    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def _error_bars(fig) -> int:
    return sum(type(c).__name__ == "ErrorbarContainer" for ax in fig.axes for c in ax.containers)


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def _numbers(ax) -> list[str]:
    """The numbers written in a heatmap (not the strategy's colour key by its title)."""
    return [t.get_text() for t in ax.texts if t.get_text().isdigit()]


def _visible(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


# ------------------------------------------------------------------ figures


def test_forgetting_curves(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_forgetting_curves(data, tmp_path / "f.png")
    assert _is_png(tmp_path / "f.png")
    axes = _visible(fig)
    assert [ax.get_title(loc="left") for ax in axes] == STRATEGIES
    assert "after training exp. i" in {ax.get_xlabel() for ax in axes}
    assert axes[0].get_ylabel().startswith("accuracy on exp. j (%)")
    assert _legend_texts(fig) == [f"exp {j}" for j in range(T)]
    # one line per experience, starting at the experience's own training step
    lines = [ln for ln in axes[0].get_lines() if ln.get_label().startswith("exp")]
    assert [int(ln.get_xdata()[0]) for ln in lines] == list(range(T))
    assert _bands(fig) == len(STRATEGIES) * T
    one = plots.plot_forgetting_curves(results.read_run(single))
    assert _bands(one) == 0


def test_forgetting_curves_plot_the_mean_over_seeds(multi):
    data = results.read_run(multi)
    fig = plots.plot_forgetting_curves(data)
    ewc = next(ax for ax in fig.axes if ax.get_title(loc="left") == "ewc")
    exp0 = next(ln for ln in ewc.get_lines() if ln.get_label() == "exp 0")
    acc = pd.read_csv(multi / "ewc" / "seed0" / "accuracy_matrix.csv")
    for seed in (1, 2):
        acc = pd.concat([acc, pd.read_csv(multi / "ewc" / f"seed{seed}" / "accuracy_matrix.csv")])
    expected = acc[acc["eval_exp"] == 0].groupby("train_exp")["accuracy"].mean().to_numpy()
    np.testing.assert_allclose(exp0.get_ydata(), 100 * expected)  # in %


def test_average_accuracy(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_average_accuracy(data, tmp_path / "a.png")
    assert _is_png(tmp_path / "a.png")
    ax = _visible(fig)[0]
    assert ax.get_xlabel() == "after training experience i"
    assert ax.get_ylabel().startswith("accuracy on seen experiences (%)")
    assert _legend_texts(fig) == STRATEGIES
    assert _bands(fig) == len(STRATEGIES)
    assert _bands(plots.plot_average_accuracy(results.read_run(single))) == 0


def test_average_accuracy_zooms_on_the_leaders_and_names_hidden_curves(tmp_path):
    """One run on the full 0-100 scale: a second panel holds only the strategies that end within
    10 points of the best; a curve drawn exactly on another's says so in the legend."""
    out = tmp_path / "run"
    _fill(out, ["naive", "ewc", "cumulative", "varc"], [0], protocol="p")

    def set_matrix(strategy, seen):  # accuracy on each seen experience, after each experience
        path = out / strategy / "seed0" / "accuracy_matrix.csv"
        a = pd.read_csv(path)
        a["accuracy"] = [seen(i, j) if j <= i else 0.0 for i, j in zip(a["train_exp"], a["eval_exp"])]
        a.to_csv(path, index=False)

    set_matrix("naive", lambda i, j: 1.0 if i == j else 0.0)
    set_matrix("ewc", lambda i, j: 1.0 if i == j else 0.0)
    set_matrix("cumulative", lambda i, j: 0.97 - 0.01 * i)
    set_matrix("varc", lambda i, j: 0.98 - 0.01 * i)
    fig = plots.plot_average_accuracy(results.read_run(out))
    full, zoom = _visible(fig)
    assert {ln.get_label() for ln in full.get_lines() if not ln.get_label().startswith("_")} == \
        {"naive", "ewc", "cumulative", "varc"}
    assert {ln.get_label() for ln in zoom.get_lines() if not ln.get_label().startswith("_")} == {"cumulative", "varc"}
    assert full.get_ylim()[0] < 0 < 80 < zoom.get_ylim()[0] and "starts at" in zoom.get_ylabel()
    assert _legend_texts(fig) == ["naive", "cumulative", "ewc (≈ naive)", "varc"]
    set_matrix("ewc", lambda i, j: 0.5)  # apart from naive: its own name only; one leader left: no zoom
    set_matrix("cumulative", lambda i, j: 0.6)
    fig = plots.plot_average_accuracy(results.read_run(out))
    assert len(_visible(fig)) == 1 and _legend_texts(fig) == ["naive", "cumulative", "ewc", "varc"]


def test_accuracy_matrices_are_annotated(multi, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_accuracy_matrices(data, tmp_path / "m.png")
    assert _is_png(tmp_path / "m.png")
    axes = [ax for ax in _visible(fig) if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in axes] == STRATEGIES
    mean, _, n = agg.mean_matrix(data, data.runs[0], "varc")
    assert n == 3
    texts = _numbers(axes[2])
    assert len(texts) == T * (T + 1) // 2  # the lower triangle and the diagonal
    assert texts[1] == f"{100 * mean[1, 0]:.0f}"  # R[1][0], in %
    assert "accuracy (%)" in [ax.get_ylabel() for ax in fig.axes]  # the colour bar


def test_heatmap_masks_experiences_not_trained_yet(multi):
    fig = plots.plot_accuracy_matrices(results.read_run(multi))
    for ax in [ax for ax in _visible(fig) if ax.get_title(loc="left")]:
        shown = ax.images[0].get_array()
        untrained = np.triu(np.ones((T, T), dtype=bool), k=1)
        assert np.array_equal(np.ma.getmaskarray(shown), untrained)  # j > i masked, nothing else
        assert sum(p.get_hatch() is not None for p in ax.patches) == untrained.sum()  # and hatched
        assert len(_numbers(ax)) == T * (T + 1) // 2  # no number written over them
    assert any("not trained yet" in t for t in _legend_texts(fig))


def test_heatmap_cell_text_never_hides_a_near_perfect_score():
    assert [plots._cell_text(v) for v in (0.0, 0.834, 0.994, 1.0)] == ["0", "83", "99", "100"]


def test_final_accuracy_and_forgetting_bars(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_final_accuracy_forgetting(data, tmp_path / "b.png")
    assert _is_png(tmp_path / "b.png")
    acc_ax, fgt_ax = _visible(fig)
    assert acc_ax.get_xlabel() == "final accuracy (%)"
    assert fgt_ax.get_xlabel().startswith("average forgetting")
    assert [t.get_text() for t in acc_ax.get_yticklabels()] == STRATEGIES
    summary = pd.read_csv(multi / "summary.csv")
    means = summary.groupby("strategy")["final_accuracy"].mean()
    widths = [p.get_width() for p in acc_ax.patches]
    np.testing.assert_allclose(widths, [100 * means[s] for s in STRATEGIES])
    assert _error_bars(fig) == 2 * len(STRATEGIES)
    assert _error_bars(plots.plot_final_accuracy_forgetting(results.read_run(single))) == 0


def test_a_bar_over_fewer_cells_than_the_others_says_how_many(multi, tmp_path):
    out = tmp_path / "under_way"
    _fill(out, ["naive"], [0, 1, 2], protocol="under_way")
    _fill(out, ["varc"], [0], protocol="under_way")
    data = results.read_run(out)
    for fig in (plots.plot_final_accuracy_forgetting(data), plots.plot_cost(data)):
        order = [tick.get_text() for tick in _visible(fig)[0].get_yticklabels()]  # the panels share it
        for ax in _visible(fig):
            texts = [t.get_text() for t in ax.texts]
            assert len(texts) == 2 and texts[order.index("varc")].endswith(" (n = 1)"), texts
            assert "n =" not in texts[order.index("naive")]
    complete = plots.plot_final_accuracy_forgetting(results.read_run(multi))
    assert not [t for ax in _visible(complete) for t in ax.texts if "n =" in t.get_text()]


def test_cost(multi, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_cost(data, tmp_path / "c.png")
    assert _is_png(tmp_path / "c.png")
    axes = _visible(fig)
    labels = [ax.get_xlabel() for ax in axes]
    assert labels[0].startswith("training time (min") and labels[1].startswith("evaluation time (min")
    # memory: each strategy's increase over the run's lowest peak, which the panel names
    assert labels[2] == "memory above\nbaseline (MB)"
    peaks = pd.read_csv(multi / "summary.csv").groupby("strategy")["peak_memory_mb"].mean()
    widths = [p.get_width() for p in axes[2].patches]
    np.testing.assert_allclose(widths, [peaks[s] - peaks.min() for s in STRATEGIES])
    assert f"baseline {peaks.min():,.0f} MB" in axes[2].get_title(loc="right")
    minutes = pd.read_csv(multi / "summary.csv").groupby("strategy")["train_seconds"].mean() / 60
    np.testing.assert_allclose([p.get_width() for p in axes[0].patches], [minutes[s] for s in STRATEGIES])


def test_cost_panels_keep_one_scale_across_runs(multi, tmp_path):
    # one run's training times span a factor > 30, the other's do not: the column is log for both
    slow = tmp_path / "slow"
    _fill(slow, ["naive", "ewc"], [0], protocol="digits_small")
    timings = slow / "ewc" / "seed0" / "timings.csv"
    t = pd.read_csv(timings)
    t["train_seconds"] *= 1000
    t.to_csv(timings, index=False)
    metrics = slow / "ewc" / "seed0" / "metrics.json"
    m = __import__("json").loads(metrics.read_text())
    m["train_seconds"] = float(t["train_seconds"].sum())
    metrics.write_text(__import__("json").dumps(m))
    fig = plots.plot_cost(results.read_runs([multi, slow]))
    rows = np.array(_visible(fig)).reshape(2, 3)
    for col in rows.T:
        assert len({ax.get_xscale() for ax in col}) == 1  # no panel column mixes log and linear
        assert len({ax.get_xlim() for ax in col}) == 1  # and the runs share the axis
    assert rows[0, 0].get_xscale() == "log"


def _whiskers_within_the_axis(ax) -> None:
    """Every error bar of a log-x axis ends inside it (none runs off an end and reads as a line)."""
    lo, hi = ax.get_xlim()
    segments = [seg for coll in ax.collections if hasattr(coll, "get_segments") for seg in coll.get_segments()]
    assert segments
    for seg in segments:
        x = np.asarray(seg, dtype=float)[:, 0]
        assert ((x >= lo * 0.999) & (x <= hi * 1.001)).all(), (x, lo, hi)


def test_inference_tradeoff(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_inference_tradeoff(data, tmp_path / "i.png")
    assert _is_png(tmp_path / "i.png")
    ax = _visible(fig)[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("milliseconds per test image")
    assert ax.get_ylabel().startswith("accuracy on the timed test images (%)")
    _whiskers_within_the_axis(ax)
    assert _legend_texts(fig) == SETTINGS
    assert _error_bars(fig) == len(SETTINGS)
    assert _error_bars(plots.plot_inference_tradeoff(results.read_run(single))) == 0


def test_inference_plot_needs_inference_files(tmp_path):
    _fill(tmp_path / "r", ["naive"], [0], protocol="p")
    data = results.read_run(tmp_path / "r")
    assert not plots.has_inference(data)
    with pytest.raises(UserError, match="inference"):
        plots.plot_inference_tradeoff(data)


def test_make_figures_writes_every_figure_in_each_format(multi, tmp_path):
    paths = plots.make_figures([multi], tmp_path / "png")
    assert [p.name for p in paths] == ["forgetting_curves.png", "accuracy_matrix.png", "average_accuracy.png",
                                       "final_accuracy_forgetting.png", "cost.png", "inference_tradeoff.png"]
    assert all(_is_png(p) for p in paths)
    with pytest.raises(UserError, match="format"):
        plots.make_figures([multi], tmp_path, fmt="jpg")


def test_several_runs_are_drawn_side_by_side(multi, single, tmp_path):
    paths = {p.name for p in plots.make_figures([multi, single], tmp_path)}
    assert {"forgetting_curves_digits_small.png", "forgetting_curves_one_seed.png",
            "accuracy_matrix_one_seed.png", "average_accuracy.png"} <= paths
    fig = plots.plot_average_accuracy(results.read_runs([multi, single]))
    axes = _visible(fig)
    assert [ax.get_title(loc="left") for ax in axes] == ["digits_small", "one_seed"]
    assert axes[0].get_ylim() == axes[1].get_ylim() and axes[0].get_xlim() == axes[1].get_xlim()


ABLATION = ["slda", "base", "head_full", "head_full_ds0", "head_full_ds0_epochs_15", "head_full_ds0_short",
            "head_full_epochs_60", "head_full_trunk_60", "head_full_width_128", "lora8_ds0"]


@pytest.mark.parametrize("strategies", [["naive", "ewc", "replay_500", "varc"], ["varc"], ABLATION])
def test_titles_and_legends_lie_inside_the_figure(tmp_path, strategies):
    # long run and protocol names: the longest titles a reader will meet, on wide and narrow figures
    out = tmp_path / "a_run_folder_with_a_rather_long_name_for_its_titles"
    _fill(out, strategies, [0, 1], protocol="a_protocol_whose_name_is_long_too")
    data = results.read_run(out)
    figures = [plots.plot_forgetting_curves(data), plots.plot_accuracy_matrices(data),
               plots.plot_average_accuracy(data), plots.plot_final_accuracy_forgetting(data),
               plots.plot_cost(data), plots.plot_inference_tradeoff(data)]
    for fig in figures:
        fig.canvas.draw()
        page = fig.bbox
        for artist in [fig._suptitle] + fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
            box = artist.get_window_extent()
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, \
                (fig._suptitle.get_text(), artist)
        if fig is figures[-1] and strategies == ABLATION:
            _whiskers_within_the_axis(_visible(fig)[0])
        # axis labels lie inside the figure, and those of neighbouring panels never run into each other
        labels = [(ax.get_xlabel(), ax.xaxis.label.get_window_extent()) for ax in _visible(fig) if ax.get_xlabel()]
        for text, box in labels:
            assert page.x0 <= box.x0 and box.x1 <= page.x1, (fig._suptitle.get_text(), text)
        for (ta, a), (tb, b) in itertools.combinations(labels, 2):
            assert not a.overlaps(b), (fig._suptitle.get_text(), ta, tb)


def test_an_accuracy_axis_that_does_not_start_at_zero_says_so(tmp_path):
    for name, seen in (("high", 0.97), ("low", 0.3)):
        _fill(tmp_path / name, ["naive"], [0], protocol="p")
        acc = tmp_path / name / "naive" / "seed0" / "accuracy_matrix.csv"
        a = pd.read_csv(acc)
        a["accuracy"] = np.where(a["eval_exp"] <= a["train_exp"], seen + 0.01 * a["eval_exp"], 0.0)
        a.to_csv(acc, index=False)
    high = _visible(plots.plot_average_accuracy(results.read_run(tmp_path / "high")))[0]
    lo = high.get_ylim()[0]
    assert 50 < lo < 97 and f"starts at {lo:g}%" in high.get_ylabel()  # zoomed to the data, and says so
    assert any(ln.get_transform() == high.transAxes for ln in high.get_lines())  # the break on the spine
    low = _visible(plots.plot_average_accuracy(results.read_run(tmp_path / "low")))[0]
    assert low.get_ylim()[0] < 0 < 100 < low.get_ylim()[1] and "starts at" not in low.get_ylabel()


def test_strategy_styles_depend_on_the_name_alone():
    known = ["naive", "cumulative", "ewc", "si", "lwf", "replay", "gem", "agem", "icarl", "gdumb", "der",
             "slda", "varc", "avarc_plus"]
    styles = plots.strategy_styles(known + ["replay_200", "replay_500", "my_method"])
    assert len({(s.color, s.linestyle, s.marker) for n, s in styles.items() if n in known}) == len(known)
    # a name keeps its style whatever else is drawn beside it
    for name in ("ewc", "replay_500", "my_method"):
        assert plots.strategy_styles([name])[name] == styles[name] == plots.strategy_style(name)
    # variants: shades of their base's hue, told apart from the base and from each other
    import colorsys
    from matplotlib.colors import to_rgb

    hue = lambda c: colorsys.rgb_to_hls(*to_rgb(c))[0]  # noqa: E731
    family = [styles[n].color for n in ("replay", "replay_200", "replay_500")]
    assert len(set(family)) == 3 and max(hue(c) for c in family) - min(hue(c) for c in family) < 0.02
    assert (styles["my_method"].color, styles["my_method"].linestyle, styles["my_method"].marker) not in \
        {(s.color, s.linestyle, s.marker) for n, s in styles.items() if n in known}


def test_strategies_drawn_together_never_share_a_key():
    """An ablation's rows (hashed styles) next to shipped strategies: no two share colour, line
    style and marker (two of these rows hash to the same key), and no colour moves."""
    names = ABLATION + ["randumb", "vae_gc"]
    alone = {n: plots.strategy_style(n) for n in names}
    assert len({(s.color, s.linestyle, s.marker) for s in alone.values()}) < len(names)
    styles = plots.strategy_styles(names)
    keys = [(s.color, s.linestyle, s.marker) for s in styles.values()]
    assert len(set(keys)) == len(keys)
    assert all(styles[n].color == alone[n].color for n in names)
    assert styles["base"] == alone["base"]  # the first of the two (alphabetically) keeps its key


def test_a_strategy_has_the_same_colour_in_runs_with_different_strategy_sets(tmp_path):
    _fill(tmp_path / "a", ["naive", "ewc", "varc"], [0], protocol="p")
    _fill(tmp_path / "b", ["ewc", "replay_500", "my_method"], [0], protocol="p")

    def colours(run):
        ax = _visible(plots.plot_average_accuracy(results.read_run(tmp_path / run)))[0]
        return {ln.get_label(): to_hex(ln.get_color()) for ln in ax.get_lines()}

    a, b = colours("a"), colours("b")
    assert a["ewc"] == b["ewc"] == plots.strategy_style("ewc").color.lower()
    both = {ln.get_label(): to_hex(ln.get_color()) for ax in
            _visible(plots.plot_average_accuracy(results.read_runs([tmp_path / "a", tmp_path / "b"])))
            for ln in ax.get_lines()}
    assert {k: both[k] for k in b} == b and {k: both[k] for k in a} == a


def test_one_colour_per_strategy_across_figures(multi):
    data = results.read_run(multi)
    styles = plots.strategy_styles(data.strategies)
    lines = {ln.get_label(): to_hex(ln.get_color())
             for ln in _visible(plots.plot_average_accuracy(data))[0].get_lines()}
    bars = {t.get_text(): to_hex(p.get_facecolor())
            for t, p in zip(_visible(plots.plot_cost(data))[0].get_yticklabels(),
                            _visible(plots.plot_cost(data))[0].patches)}
    for s in STRATEGIES:
        assert lines[s] == bars[s] == styles[s].color.lower()


def test_forgetting_curves_draw_nothing_over_the_data_area(multi):
    fig = plots.plot_forgetting_curves(results.read_run(multi))
    for ax in _visible(fig):
        # only the experiences' lines live in the axes; the strategy's key is a mark by its title
        assert all(ln.get_label().startswith("exp") for ln in ax.get_lines() if ln.get_transform() == ax.transData)
        assert not [ln for ln in ax.get_lines() if ln.get_transform() != ax.transData and ln.get_linewidth() > 2]


# ------------------------------------------------------------------ tables and report


def test_summary_table_equals_the_csv(multi):
    summary = pd.read_csv(multi / "summary.csv")
    table = agg.summary_table(results.read_run(multi)).set_index("strategy")
    assert list(table.index) == STRATEGIES
    for metric in results.METRIC_NAMES + results.COST_NAMES:
        g = summary.groupby("strategy")[metric]
        for s in STRATEGIES:
            assert table.loc[s, f"{metric}_mean"] == pytest.approx(g.mean()[s])
            assert table.loc[s, f"{metric}_sd"] == pytest.approx(g.std()[s])
    assert (table["n"] == 3).all()


def _md_row(md: str, first: str) -> list[str]:
    row = next(line for line in md.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_report_tables_equal_the_csvs_and_html_is_self_contained(multi):
    md_path = write_report(multi)
    md = md_path.read_text()
    summary = pd.read_csv(multi / "summary.csv")
    header = _md_row(md, "strategy")
    assert header[:6] == ["strategy", "cells", "final accuracy (%)", "avg. incremental accuracy (%)",
                          "avg. forgetting (pts)", "BWT (pts)"]
    for s in STRATEGIES:
        cells = _md_row(md, s)
        vals = summary[summary["strategy"] == s]
        assert cells[1] == "3"
        for k, metric in enumerate(["final_accuracy", "average_incremental_accuracy", "average_forgetting", "bwt"]):
            assert cells[2 + k] == f"{100 * vals[metric].mean():.2f} ± {100 * vals[metric].std():.2f}"
    inference = pd.concat(pd.read_csv(multi / "varc" / f"seed{k}" / "inference.csv") for k in range(3))
    prune = inference[inference["setting"] == "prune[4:3]"]["accuracy"]
    assert f"| varc | 6 | prune[4:3] | 3 | {100 * prune.mean():.2f} ± {100 * prune.std():.2f} |" in md
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures and all((multi / f).is_file() for f in figures)
    # every figure has a one-line caption saying how to read it
    captions = [md.split(f"]({f})", 1)[1].split("\n\n")[1] for f in figures]
    assert all(c.startswith("*") and c.endswith("*") and "\n" not in c and len(c) > 40 for c in captions)
    assert "```yaml" in md and "dataset: digits" in md
    assert "| threads | 1 |" in md and f"| versions.numpy | {np.__version__} |" in md

    html = (multi / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == len(figures) == html.count("<figcaption>")
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<link" not in html and "<script" not in html
    assert "<td>naive</td><td class=\"num\">3</td>" in html


def test_report_states_each_strategys_settings_once_and_what_was_run(multi):
    md = write_report(multi, figures=False).read_text()
    for s in STRATEGIES:
        assert f"  {s}:\n    strategy: {s}" in md  # under `strategies:`, once, not nested twice
        assert md.count(f"{s}:\n  {s}:") == 0 and md.count(f"  {s}:\n    strategy:") == 1
    selection = md.split("## What was run", 1)[1].split("\n## ", 1)[0]
    assert "3 strategies (naive, ewc, varc)" in selection and "3 seeds (0, 1, 2)" in selection
    assert "1 class order (natural)" in selection
    assert "cannot be told" in selection  # no shipped protocol of that name to compare with
    assert "`cil run digits_small --only ewc`" in selection


def test_report_says_when_a_folder_holds_a_subset_of_a_shipped_protocol(tmp_path):
    import yaml

    from cil.config import protocols_dir

    shipped = yaml.safe_load((protocols_dir() / "split_digits.yaml").read_text())
    _fill(tmp_path / "sub", ["naive", "ewc"], [0], protocol="split_digits", description=shipped["description"])
    md = write_report(tmp_path / "sub", figures=False).read_text()
    selection = md.split("## What was run", 1)[1].split("\n## ", 1)[0]
    assert "**A subset:** 2 of the" in selection and "not in this folder:" in selection
    assert "varc" in selection.split("not in this folder:", 1)[1]


def test_report_on_a_single_seed_prints_no_spread(single):
    md = write_report(single, figures=False).read_text()
    row = next(line for line in md.splitlines() if line.startswith("| naive |"))
    assert "±" not in row
    final = pd.read_csv(single / "summary.csv").set_index("strategy").loc["naive", "final_accuracy"]
    assert f"| {100 * final:.2f} |" in row


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium on PATH (apt-get install chromium)")
def test_report_html_renders_in_a_headless_browser(single, tmp_path):
    write_report(single)
    shot = tmp_path / "report.png"
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1280,3000", (single / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    saturated = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.25  # figures are coloured, text is grey
    assert saturated.sum() > 5000  # the embedded figures were decoded and drawn


# ------------------------------------------------------------------ command line


def test_cli_summarize_plot_report(multi, single, tmp_path, capsys):
    assert main(["summarize", str(multi), str(single)]) == 0
    out = capsys.readouterr().out
    assert "digits_small" in out and "one_seed" in out and "prune[4:3]" in out
    assert main(["summarize", str(multi), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["final_accuracy_mean"].tolist() == pytest.approx(  # csv: the files' units, full precision
        pd.read_csv(multi / "summary.csv").groupby("strategy")["final_accuracy"].mean()[STRATEGIES].tolist())
    assert main(["plot", str(single), "--out", str(tmp_path / "figs"), "--format", "svg"]) == 0
    svg = sorted((tmp_path / "figs").glob("*.svg"))
    assert len(svg) == 6 and all(p.read_text().lstrip().startswith("<?xml") for p in svg)
    assert main(["plot", str(multi), str(single)]) == 2  # where should the figures go?
    assert "--out" in capsys.readouterr().err


def test_cli_summarize_speaks_the_readmes_units(multi, capsys):
    assert main(["summarize", str(multi), "--format", "markdown", "--no-inference"]) == 0
    out = capsys.readouterr().out
    header = _md_row(out, "protocol")
    assert header == ["protocol", "strategy", "cells", "final accuracy (%)", "avg. incremental accuracy (%)",
                      "avg. forgetting (pts)", "BWT (pts)", "train (min)", "eval (min)", "peak memory (MB)"]
    summary = pd.read_csv(multi / "summary.csv").groupby("strategy")
    row = dict(zip(header, _md_row(out, "digits_small")))
    mean, sd = summary["final_accuracy"].mean()["naive"], summary["final_accuracy"].std()["naive"]
    assert row["strategy"] == "naive" and row["final accuracy (%)"] == f"{100 * mean:.2f} ± {100 * sd:.2f}"
    minutes = float(row["train (min)"].split(" ± ")[0])
    assert minutes == pytest.approx(summary["train_seconds"].mean()["naive"] / 60, rel=0.01)
    assert main(["summarize", str(multi), "--per-seed", "--format", "markdown"]) == 0
    per_seed = capsys.readouterr().out
    assert "| protocol | strategy | seed | order | final accuracy (%) |" in per_seed


def test_cli_summarize_warns_when_protocols_are_mixed(multi, single, tmp_path, capsys):
    assert main(["summarize", str(multi), str(single)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ") and "digits_small" in err and "one_seed" in err
    again = tmp_path / "digits_small_again"
    _fill(again, ["naive"], [0], protocol="digits_small")
    assert main(["summarize", str(multi), str(again)]) == 0
    assert capsys.readouterr().err == ""  # one protocol: nothing to warn about


def test_cli_summarize_compare_pivots_strategies_against_runs(multi, tmp_path, capsys):
    other = tmp_path / "other"
    _fill(other, ["ewc", "varc", "replay_500"], [0, 1], protocol="digits_small")
    assert main(["summarize", str(multi), str(other), "--compare", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("final accuracy (%): each run, and Δ = run minus digits_small")
    header = _md_row(out, "strategy")
    assert header == ["strategy", "digits_small", "other", "Δ other"]
    a = pd.read_csv(multi / "summary.csv").groupby("strategy")["final_accuracy"].mean()
    b = pd.read_csv(other / "summary.csv").groupby("strategy")["final_accuracy"].mean()
    ewc = dict(zip(header, _md_row(out, "ewc")))
    assert ewc["Δ other"] == f"{100 * (b['ewc'] - a['ewc']):+.2f}"
    assert dict(zip(header, _md_row(out, "naive")))["other"] == "–"  # a run without the strategy
    assert "avg. forgetting (pts)" in out  # the second default value
    assert main(["summarize", str(multi), "--compare"]) == 2  # one run: nothing to compare
    assert "two or more" in capsys.readouterr().err


def test_cli_report_of_several_runs_writes_one_comparison(multi, tmp_path, capsys):
    other = tmp_path / "other"
    _fill(other, ["naive", "ewc"], [0], protocol="digits_small")
    assert main(["report", str(multi), str(other)]) == 2  # a comparison belongs to no run: where does it go?
    assert "--out" in capsys.readouterr().err and not (other / "report.md").exists()
    out = tmp_path / "comparison"
    assert main(["report", str(multi), str(other), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# Comparison: digits_small, other")
    assert "## Run against run" in md and "| strategy | digits_small | other | Δ other |" in md
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "figures/forgetting_curves_other.png" in figures and "figures/average_accuracy.png" in figures
    assert all((out / f).is_file() for f in figures)
    assert "### Protocol: other" in md and "### What was run: digits_small" in md
    assert (out / "report.html").read_text().count("<figure>") == len(figures)
    assert not (other / "report.md").exists()  # the runs' own folders are left alone


def test_cli_reports_a_broken_file_in_one_line(tmp_path, capsys):
    _fill(tmp_path / "r", ["naive"], [0], protocol="p")
    bad = tmp_path / "r" / "naive" / "seed0" / "accuracy_matrix.csv"
    bad.write_text(bad.read_text().replace("accuracy\n", "acc\n", 1))
    assert main(["summarize", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: missing column(s) accuracy")


def test_cli_warns_about_incomplete_cells(tmp_path, capsys):
    _fill(tmp_path / "r", ["naive"], [0], protocol="p")
    (tmp_path / "r" / "naive" / "seed1").mkdir()
    assert main(["summarize", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "seed1" in err
