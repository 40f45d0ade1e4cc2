"""Figures, report and summary tables drawn from synthetic result folders."""

from __future__ import annotations

import re
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


def _fill(out: Path, strategies, seeds, *, protocol: str) -> None:
    rng = np.random.default_rng(len(str(out)))
    for k, strategy in enumerate(strategies):
        for seed in seeds:
            R = np.tril(rng.uniform(0.1 + 0.2 * k, 0.95, (T, T)))
            timings = [{"train_exp": i, "train_seconds": float(rng.uniform(1, 3) * (k + 1)),
                        "eval_seconds": float(rng.uniform(0.1, 0.2)), "peak_memory_mb": 200.0 + k}
                       for i in range(T)]
            inference = None
            if strategy == "varc":
                inference = [{"setting": s, "accuracy": float(rng.uniform(0.5, 0.9)),
                              "images_per_second": 100.0 / (n + 1), "token_forwards_per_image": 16 * (n + 1),
                              "seconds_per_image": 0.01 * (n + 1) * float(rng.uniform(0.9, 1.1))}
                             for n, s in enumerate(SETTINGS)]
            results.write_cell(out, protocol=protocol, strategy=strategy, seed=seed, accuracy_matrix=R,
                               timings=timings, metrics={}, inference=inference,
                               config={"name": protocol, "dataset": "digits", "stream": {"n_experiences": T},
                                       "strategies": [{"name": strategy}],
                                       "run": {"strategy": strategy, "seed": seed, "device": "cpu", "threads": 1,
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


def _visible(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


# ------------------------------------------------------------------ figures


def test_forgetting_curves(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_forgetting_curves(data, tmp_path / "f.png")
    assert _is_png(tmp_path / "f.png")
    axes = _visible(fig)
    assert [ax.get_title(loc="left") for ax in axes] == STRATEGIES
    assert "after training experience i" in {ax.get_xlabel() for ax in axes}
    assert axes[0].get_ylabel() == "accuracy on experience j"
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
    np.testing.assert_allclose(exp0.get_ydata(), expected)


def test_average_accuracy(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_average_accuracy(data, tmp_path / "a.png")
    assert _is_png(tmp_path / "a.png")
    ax = _visible(fig)[0]
    assert ax.get_xlabel() == "after training experience i"
    assert ax.get_ylabel() == "accuracy on seen experiences"
    assert _legend_texts(fig) == STRATEGIES
    assert _bands(fig) == len(STRATEGIES)
    assert _bands(plots.plot_average_accuracy(results.read_run(single))) == 0


def test_accuracy_matrices_are_annotated(multi, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_accuracy_matrices(data, tmp_path / "m.png")
    assert _is_png(tmp_path / "m.png")
    axes = [ax for ax in _visible(fig) if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in axes] == STRATEGIES
    mean, _, n = agg.mean_matrix(data, data.runs[0], "varc")
    assert n == 3
    texts = [t.get_text() for t in axes[2].texts]
    assert len(texts) == T * T
    assert texts[T] == f"{mean[1, 0]:.2f}".lstrip("0")  # R[1][0]
    assert "accuracy" in [ax.get_ylabel() for ax in fig.axes]  # the colour bar


def test_heatmap_cell_text_never_hides_a_near_perfect_score():
    assert [plots._cell_text(v) for v in (0.0, 0.834, 0.996, 1.0)] == [".00", ".83", "1.0", "1.0"]


def test_final_accuracy_and_forgetting_bars(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_final_accuracy_forgetting(data, tmp_path / "b.png")
    assert _is_png(tmp_path / "b.png")
    acc_ax, fgt_ax = _visible(fig)
    assert acc_ax.get_xlabel() == "final accuracy"
    assert fgt_ax.get_xlabel().startswith("average forgetting")
    assert [t.get_text() for t in acc_ax.get_yticklabels()] == STRATEGIES
    summary = pd.read_csv(multi / "summary.csv")
    means = summary.groupby("strategy")["final_accuracy"].mean()
    widths = [p.get_width() for p in acc_ax.patches]
    np.testing.assert_allclose(widths, [means[s] for s in STRATEGIES])
    assert _error_bars(fig) == 2 * len(STRATEGIES)
    assert _error_bars(plots.plot_final_accuracy_forgetting(results.read_run(single))) == 0


def test_cost(multi, tmp_path):
    fig = plots.plot_cost(results.read_run(multi), tmp_path / "c.png")
    assert _is_png(tmp_path / "c.png")
    labels = [ax.get_xlabel() for ax in _visible(fig)]
    assert labels[0].startswith("training time (s") and labels[1].startswith("evaluation time (s")
    assert labels[2] == "peak memory (MB)"


def test_inference_tradeoff(multi, single, tmp_path):
    data = results.read_run(multi)
    fig = plots.plot_inference_tradeoff(data, tmp_path / "i.png")
    assert _is_png(tmp_path / "i.png")
    ax = _visible(fig)[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("seconds per test image")
    assert ax.get_ylabel() == "final accuracy on all classes"
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
    assert [ax.get_title() for ax in _visible(fig)] == ["digits_small", "one_seed"]


def test_strategy_styles_are_fixed_and_distinct():
    names = ["naive", "ewc", "replay", "replay_500", "varc", "avarc_plus"] + [f"custom_{k}" for k in range(12)]
    styles = plots.strategy_styles(names)
    assert len({(s.color, s.linestyle) for s in styles.values()}) == len(names)
    # a name keeps its style whatever else is drawn beside it
    assert plots.strategy_styles(["ewc"])["ewc"] == styles["ewc"]
    assert plots.strategy_styles(["custom_3", "naive"])["custom_3"] == plots.strategy_styles(["custom_3"])["custom_3"]
    assert styles["replay_500"].color == styles["replay"].color != styles["ewc"].color


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


def test_report_tables_equal_the_csvs_and_html_is_self_contained(multi):
    md_path = write_report(multi)
    md = md_path.read_text()
    summary = pd.read_csv(multi / "summary.csv")
    for s in STRATEGIES:
        row = next(line for line in md.splitlines() if line.startswith(f"| {s} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        vals = summary[summary["strategy"] == s]
        assert cells[1] == "3"
        for k, metric in enumerate(["final_accuracy", "average_incremental_accuracy", "average_forgetting", "bwt"]):
            assert cells[2 + k] == f"{vals[metric].mean():.3f} ± {vals[metric].std():.3f}"
    inference = pd.concat(pd.read_csv(multi / "varc" / f"seed{k}" / "inference.csv") for k in range(3))
    prune = inference[inference["setting"] == "prune[4:3]"]["accuracy"]
    assert f"| varc | prune[4:3] | 3 | {prune.mean():.3f} ± {prune.std():.3f} |" in md
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures and all((multi / f).is_file() for f in figures)
    assert "```yaml" in md and "dataset: digits" in md
    assert "| threads | 1 |" in md and f"| versions.numpy | {np.__version__} |" in md

    html = (multi / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == len(figures)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<link" not in html and "<script" not in html
    assert "<td>naive</td><td class=\"num\">3</td>" in html


def test_report_on_a_single_seed_prints_no_spread(single):
    md = write_report(single, figures=False).read_text()
    row = next(line for line in md.splitlines() if line.startswith("| naive |"))
    assert "±" not in row
    final = pd.read_csv(single / "summary.csv").set_index("strategy").loc["naive", "final_accuracy"]
    assert f"| {final:.3f} |" in row


# ------------------------------------------------------------------ command line


def test_cli_summarize_plot_report(multi, single, tmp_path, capsys):
    assert main(["summarize", str(multi), str(single)]) == 0
    out = capsys.readouterr().out
    assert "digits_small" in out and "one_seed" in out and "prune[4:3]" in out
    assert main(["summarize", str(multi), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["final_accuracy_mean"].tolist() == pytest.approx(
        pd.read_csv(multi / "summary.csv").groupby("strategy")["final_accuracy"].mean()[STRATEGIES].tolist())
    assert main(["plot", str(single), "--out", str(tmp_path / "figs"), "--format", "svg"]) == 0
    svg = sorted((tmp_path / "figs").glob("*.svg"))
    assert len(svg) == 6 and all(p.read_text().lstrip().startswith("<?xml") for p in svg)
    assert main(["plot", str(multi), str(single)]) == 2  # where should the figures go?
    assert "--out" in capsys.readouterr().err


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
