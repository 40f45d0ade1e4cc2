"""Aggregation of result frames over seeds (and side by side over run folders) with pandas.

Everything here is a pure function of a :class:`cil.results.RunData`; plots and reports draw
their numbers from these tables only, so a figure, the report and ``cil summarize`` agree.
The spread over seeds is the sample standard deviation (``ddof=1``); with one seed it is NaN,
which plots draw as no band / no error bar and tables print without ``±``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

from cil.results import COST_NAMES, METRIC_NAMES, RunData

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Display order (and fixed colour slots, see cil.report.plots) of strategies the suite ships.
KNOWN_STRATEGIES = ["naive", "ncm", "joint", "cumulative", "ewc", "si", "lwf", "replay", "gem", "agem",
                    "icarl", "gdumb", "der", "slda", "randumb", "vae_gc", "varc", "avarc", "avarc_plus"]

#: How a value is shown in tables (the units of the README): column label and the factor from
#: the result files' unit (accuracy fractions, seconds) to the displayed one (%, points, minutes).
DISPLAY = {
    "final_accuracy": ("final accuracy (%)", 100.0),
    "average_incremental_accuracy": ("avg. incremental accuracy (%)", 100.0),
    "average_forgetting": ("avg. forgetting (pts)", 100.0),
    "bwt": ("BWT (pts)", 100.0),
    "train_seconds": ("train (min)", 1 / 60),
    "eval_seconds": ("eval (min)", 1 / 60),
    "peak_memory_mb": ("peak memory (MB)", 1.0),
    "robust_accuracy": ("under corruption (%)", 100.0),
    "accuracy": ("accuracy (%)", 100.0),
    "seconds_per_image": ("ms / image", 1000.0),
    "images_per_second": ("images / s", 1.0),
    "token_forwards_per_image": ("token forwards / image", 1.0),
}
LABELS = {k: label for k, (label, _factor) in DISPLAY.items()}
#: values whose displayed numbers are percentages or percentage points (two decimals)
POINTS = ("final_accuracy", "average_incremental_accuracy", "average_forgetting", "bwt", "accuracy",
          "robust_accuracy")

#: robust_accuracy: the final model's mean accuracy over the robustness track's corruptions and
#: severities (no value for cells run without ``robustness:``; tables leave the column out then)
SUMMARY_VALUES = METRIC_NAMES + ["robust_accuracy"] + COST_NAMES


def strategy_order(names: Iterable[str]) -> list[str]:
    """Known strategies in :data:`KNOWN_STRATEGIES` order, each followed by its variants
    (``replay_500`` after ``replay``), then the other names alphabetically."""
    names = set(names)
    order: list[str] = []
    for known in KNOWN_STRATEGIES:
        if known in names:
            order.append(known)
        order += sorted(n for n in names if variant_of(n) == known and n not in KNOWN_STRATEGIES)
    return order + sorted(names - set(order))


def variant_of(name: str) -> str | None:
    """The shipped strategy that ``name`` extends (``replay_500`` -> ``replay``), if any."""
    best = None
    for known in KNOWN_STRATEGIES:
        if name != known and name.startswith(known) and name[len(known)] in "_-:[(@.":
            if best is None or len(known) > len(best):
                best = known
    return best


def _ordered(df: "pd.DataFrame", runs: Sequence[str]) -> "pd.DataFrame":
    import pandas as pd

    order = strategy_order(df["strategy"].unique())
    df = df.copy()
    df["run"] = pd.Categorical(df["run"], categories=list(runs), ordered=True)
    df["strategy"] = pd.Categorical(df["strategy"], categories=order, ordered=True)
    return df


def _seed_stats(df: "pd.DataFrame", by: list[str], values: list[str], runs: Sequence[str]) -> "pd.DataFrame":
    """mean, sd (ddof=1) and n over seeds of ``values`` per group ``by``."""
    df = _ordered(df, runs)
    g = df.groupby(by, observed=True, sort=True)
    out = g[values].agg(["mean", "std"])
    out.columns = [f"{v}_{'sd' if s == 'std' else s}" for v, s in out.columns]
    out.insert(0, "n", g["cell"].nunique())
    out = out.reset_index()
    for col in ("run", "strategy"):
        if col in out:
            out[col] = out[col].astype(str)
    return out


def summary_table(data: RunData) -> "pd.DataFrame":
    """One row per (run, strategy): protocol, seeds, experiences and mean/sd of every summary value."""
    s = data.summary
    table = _seed_stats(s, ["run", "strategy"], SUMMARY_VALUES, data.runs)
    first = s.groupby(["run", "strategy"], observed=True)[["protocol", "n_experiences"]].first().reset_index()
    table = table.merge(first, on=["run", "strategy"], how="left")
    front = ["run", "protocol", "strategy", "n", "n_experiences"]
    return table[front + [c for c in table.columns if c not in front]]


def seen_accuracy(data: RunData) -> "pd.DataFrame":
    """Per cell and training experience i: mean of R[i][j] over j <= i (accuracy on seen classes)."""
    a = data.accuracy
    seen = a[a["eval_exp"] <= a["train_exp"]]
    return (seen.groupby(["run", "strategy", "seed", "order", "cell", "train_exp"], observed=True)["accuracy"]
            .mean().reset_index())


def seen_accuracy_curves(data: RunData) -> "pd.DataFrame":
    """Mean/sd over seeds of :func:`seen_accuracy` per (run, strategy, train_exp)."""
    return _seed_stats(seen_accuracy(data), ["run", "strategy", "train_exp"], ["accuracy"], data.runs)


def forgetting_curves(data: RunData) -> "pd.DataFrame":
    """Mean/sd over seeds of R[i][j] for i >= j, per (run, strategy, eval_exp j, train_exp i)."""
    a = data.accuracy
    a = a[a["train_exp"] >= a["eval_exp"]]
    return _seed_stats(a, ["run", "strategy", "eval_exp", "train_exp"], ["accuracy"], data.runs)


def mean_matrix(data: RunData, run: str, strategy: str) -> tuple["np.ndarray", "np.ndarray", int]:
    """(mean R, sd R, number of seeds) of one strategy in one run."""
    import numpy as np

    a = data.accuracy
    cell = a[(a["run"] == run) & (a["strategy"] == strategy)]
    g = cell.groupby(["train_exp", "eval_exp"])["accuracy"]
    T = int(cell["train_exp"].max()) + 1
    mean, sd = np.full((T, T), np.nan), np.full((T, T), np.nan)
    m, s = g.mean(), g.std()
    idx = (m.index.get_level_values(0).to_numpy(), m.index.get_level_values(1).to_numpy())
    mean[idx], sd[idx] = m.to_numpy(), s.to_numpy()
    return mean, sd, int(cell["cell"].nunique())


#: Strategies that classify by a per-class generative model (for the robustness comparison).
GENERATIVE = ("varc", "avarc_plus", "vae_gc")
# "The leading strategies": within this many points of the best accuracy (the average-accuracy
# figure's zoom panel; the robustness comparison, where a model near chance has little to lose).
LEADING_PTS = 10.0


def robustness_table(data: RunData) -> "pd.DataFrame":
    """Per (run, strategy): the final models' accuracy on the clean subset and under corruption
    (mean over corruptions and severities), the drop between them, and the time the robustness
    evaluation added as a ratio to the final clean evaluation's time, mean over cells."""
    import pandas as pd

    rob = data.robustness
    if rob is None or rob.empty:
        return pd.DataFrame()
    last = rob.groupby(["run", "strategy", "cell"])["train_exp"].transform("max")
    final = rob[rob["train_exp"] == last]
    clean = final[final["severity"] == 0].groupby(["run", "strategy", "cell"])["accuracy"].mean()
    corrupted = final[final["severity"] > 0].groupby(["run", "strategy", "cell"])["accuracy"].mean()
    cells = pd.DataFrame({"clean": clean, "corrupted": corrupted}).reset_index()
    tim = data.timings
    final_eval = tim[tim["train_exp"] == tim.groupby(["run", "strategy", "cell"])["train_exp"].transform("max")]
    final_eval = final_eval.set_index(["run", "strategy", "cell"])["eval_seconds"]
    seconds = data.summary.set_index(["run", "strategy", "cell"])["robustness_seconds"]
    cells["time_ratio"] = [seconds.get(k, float("nan")) / final_eval.get(k, float("nan"))
                           for k in zip(cells["run"], cells["strategy"], cells["cell"])]
    cells["drop"] = cells["clean"] - cells["corrupted"]
    table = cells.groupby(["run", "strategy"])[["clean", "corrupted", "drop", "time_ratio"]].mean().reset_index()
    table["generative"] = [_base_strategy(data, r, s) in GENERATIVE for r, s in zip(table["run"], table["strategy"])]
    rank = {name: k for k, name in enumerate(strategy_order(table["strategy"].unique()))}
    return table.sort_values(["run", "strategy"], key=lambda c: c.map(rank) if c.name == "strategy" else c)


def _base_strategy(data: RunData, run: str, strategy: str) -> str:
    """The registered strategy an entry runs (``replay_500`` runs ``replay``), from its config."""
    for (r, s, *_), cfg in data.configs.items():
        if r == run and s == strategy:
            entry = (cfg.get("strategies") or {}).get(strategy) or {}
            return str(entry.get("strategy", strategy))
    return strategy


def inference_table(data: RunData) -> "pd.DataFrame":
    """Mean/sd over seeds of accuracy and cost per (run, strategy, candidate classes, inference
    setting); ``classes`` is the number of classes scored against (all learnt, or the first N)."""
    import pandas as pd

    inf = data.inference
    if inf.empty:
        return pd.DataFrame()
    values = ["accuracy", "seconds_per_image", "images_per_second", "token_forwards_per_image"]
    inf = inf.copy()
    # settings keep the order the runner evaluated them in
    inf["setting"] = pd.Categorical(inf["setting"], categories=list(dict.fromkeys(inf["setting"])),
                                    ordered=True)
    table = _seed_stats(inf, ["run", "strategy", "classes", "setting"], values, data.runs)
    table["setting"] = table["setting"].astype(str)
    return table


# ---------------------------------------------------------------- formatting

def protocols(data: RunData) -> list[str]:
    """The distinct protocol names of the cells, in run order."""
    return list(dict.fromkeys(str(p) for p in data.summary["protocol"]))


def mixed_protocols_warning(data: RunData) -> str | None:
    """One line naming the protocols when the runs (or cells) mix several, else None."""
    protos = protocols(data)
    if len(protos) < 2:
        return None
    by_proto = data.summary.groupby("protocol", sort=False)["run"].unique()
    parts = [f"{p} (run{'s' if len(by_proto[p]) > 1 else ''} {', '.join(map(str, by_proto[p]))})"
             for p in protos]
    return (f"runs of different protocols are mixed: {'; '.join(parts)}; "
            "their numbers come from different data or settings")


def _decimals(name: str, shown: float) -> int:
    """Decimals of a displayed value: two for % and points, none for MB, else by magnitude."""
    if name in POINTS:
        return 2
    if name == "peak_memory_mb":
        return 0
    if not math.isfinite(shown) or shown == 0:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(abs(shown))))))  # two significant figures


def shown(name: str, value: float) -> float:
    """``value`` (the result files' unit) in the unit tables show (%, points, minutes, ms)."""
    return value * DISPLAY.get(name, ("", 1.0))[1]


def fmt(name: str, value: float, *, signed: bool = False) -> str:
    """One value in display units (``97.83``, ``+1.20`` when signed); ``–`` when missing."""
    if value is None or not math.isfinite(value):
        return "–"
    v = shown(name, value)
    d = _decimals(name, v)
    return f"{v:+.{d}f}" if signed else f"{v:.{d}f}"


def mean_sd(name: str, mean: float, sd: float) -> str:
    """``97.83 ± 0.41`` in display units (``97.83`` alone when sd is undefined; ``–`` when there
    is no value). The decimals follow the mean, so mean and sd line up."""
    if mean is None or not math.isfinite(mean):
        return "–"
    m = shown(name, mean)
    d = _decimals(name, m)
    if sd is None or not math.isfinite(sd):
        return f"{m:.{d}f}"
    return f"{m:.{d}f} ± {shown(name, sd):.{d}f}"


def display_summary(table: "pd.DataFrame", *, show_run: bool | None = None,
                    show_protocol: bool = True) -> "pd.DataFrame":
    """:func:`summary_table` as strings ``mean ± sd`` in display units (accuracy in %, forgetting
    and BWT in points, times in minutes), with the protocol and the number of cells."""
    import pandas as pd

    show_run = table["run"].nunique() > 1 if show_run is None else show_run
    values = [v for v in SUMMARY_VALUES if table[f"{v}_mean"].notna().any()]
    rows = []
    for _, r in table.iterrows():
        row = {"run": r["run"]} if show_run else {}
        if show_protocol:
            row["protocol"] = r["protocol"]
        row.update({"strategy": r["strategy"], "cells": int(r["n"])})
        for v in values:
            row[LABELS[v]] = mean_sd(v, r[f"{v}_mean"], r[f"{v}_sd"])
        rows.append(row)
    return pd.DataFrame(rows)


def display_per_seed(summary: "pd.DataFrame", *, show_run: bool) -> "pd.DataFrame":
    """One row per cell (strategy, seed, class order) in display units."""
    import pandas as pd

    rank = {name: k for k, name in enumerate(strategy_order(summary["strategy"].unique()))}
    runs = list(dict.fromkeys(summary["run"]))
    s = summary.assign(_r=summary["run"].map(runs.index), _s=summary["strategy"].map(rank))
    values = [v for v in SUMMARY_VALUES if summary[v].notna().any()]
    rows = []
    for _, r in s.sort_values(["_r", "_s", "seed", "order"]).iterrows():
        row = {"run": r["run"]} if show_run else {}
        row.update({"protocol": r["protocol"], "strategy": r["strategy"], "seed": int(r["seed"]),
                    "order": r["order"]})
        for v in values:
            row[LABELS[v]] = fmt(v, r[v])
        rows.append(row)
    return pd.DataFrame(rows)


def compare_table(table: "pd.DataFrame", value: str, runs: Sequence[str]) -> "pd.DataFrame":
    """Pivot of :func:`summary_table`: one row per strategy, one column per run (mean ± sd in
    display units), each later run followed by the difference of its mean to the first run's
    (``Δ run``; ``–`` where either lacks the strategy)."""
    import pandas as pd

    runs = list(runs)
    rows = []
    for strat in strategy_order(table["strategy"].unique()):
        row: dict[str, str] = {"strategy": strat}
        first = math.nan
        for k, run in enumerate(runs):
            r = table[(table["run"] == run) & (table["strategy"] == strat)]
            mean = float(r[f"{value}_mean"].iloc[0]) if len(r) else math.nan
            sd = float(r[f"{value}_sd"].iloc[0]) if len(r) else math.nan
            row[run] = mean_sd(value, mean, sd)
            if k == 0:
                first = mean
            else:
                row[f"Δ {run}"] = fmt(value, mean - first, signed=True)
        rows.append(row)
    return pd.DataFrame(rows)


def display_inference(table: "pd.DataFrame", *, show_run: bool | None = None) -> "pd.DataFrame":
    """:func:`inference_table` as strings ``mean ± sd`` in display units."""
    import pandas as pd

    if table.empty:
        return pd.DataFrame()
    show_run = table["run"].nunique() > 1 if show_run is None else show_run
    rows = []
    for _, r in table.iterrows():
        row = {"run": r["run"]} if show_run else {}
        row.update({"strategy": r["strategy"], "classes": int(r["classes"]), "setting": r["setting"],
                    "cells": int(r["n"])})
        for v in ("accuracy", "seconds_per_image", "images_per_second", "token_forwards_per_image"):
            row[LABELS[v]] = mean_sd(v, r[f"{v}_mean"], r[f"{v}_sd"])
        rows.append(row)
    return pd.DataFrame(rows)


TEXT_COLUMNS = ("run", "strategy", "setting", "protocol", "value", "order", "command", "cells run", "folder")


def markdown_table(df: "pd.DataFrame") -> str:
    """A GitHub-flavoured pipe table (text columns left-aligned, the rest right-aligned)."""
    cols = list(df.columns)

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    left = {c for c in cols if c in TEXT_COLUMNS}
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |",
             "|" + "|".join(":---" if c in left else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def text_table(df: "pd.DataFrame") -> str:
    """Plain aligned columns for the terminal."""
    return df.to_string(index=False)


def memory_above_baseline(data: RunData) -> tuple["pd.DataFrame", dict[str, tuple[float, str]]] | None:
    """Each cell's peak memory above a baseline, with the baseline of each run and where it
    comes from; None when there is nothing to compare (a single strategy in a single run).

    ``peak_memory_mb`` is the peak of the whole process (on a CPU mostly torch itself, about
    900 MB), so the differences between strategies are what it can tell. A run's baseline is
    the lowest peak of any of its cells; a run with one strategy takes the lowest peak of all
    the runs drawn. The returned summary frame holds ``peak_memory_mb`` minus the baseline.
    """
    s = data.summary.copy()
    peaks = s["peak_memory_mb"]
    if peaks.isna().all():
        return None
    n_strat = s.groupby("run")["strategy"].nunique()
    if (n_strat <= 1).all() and len(data.runs) == 1:
        return None
    overall = float(peaks.min())
    baselines = {}
    for run in data.runs:
        sel = s["run"] == run
        if n_strat.get(run, 0) > 1 and s.loc[sel, "peak_memory_mb"].notna().any():
            baselines[run] = (float(s.loc[sel, "peak_memory_mb"].min()), "lowest peak in the run")
        else:
            baselines[run] = (overall, "lowest peak of the runs drawn")
        s.loc[sel, "peak_memory_mb"] = s.loc[sel, "peak_memory_mb"] - baselines[run][0]
    return s, baselines


def summary_stats(summary: "pd.DataFrame", runs: Sequence[str]) -> "pd.DataFrame":
    """:func:`summary_table`'s statistics for a summary frame already transformed."""
    return _seed_stats(summary, ["run", "strategy"], SUMMARY_VALUES, runs)
