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
KNOWN_STRATEGIES = ["naive", "joint", "cumulative", "ewc", "si", "lwf", "replay", "gem", "agem",
                    "icarl", "gdumb", "der", "slda", "varc", "avarc", "avarc_plus"]

LABELS = {
    "final_accuracy": "final accuracy",
    "average_incremental_accuracy": "avg. incremental accuracy",
    "average_forgetting": "avg. forgetting",
    "bwt": "BWT",
    "train_seconds": "train time (s)",
    "eval_seconds": "eval time (s)",
    "peak_memory_mb": "peak memory (MB)",
    "accuracy": "accuracy",
    "seconds_per_image": "seconds / image",
    "images_per_second": "images / s",
    "token_forwards_per_image": "token forwards / image",
}

SUMMARY_VALUES = METRIC_NAMES + COST_NAMES


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


def inference_table(data: RunData) -> "pd.DataFrame":
    """Mean/sd over seeds of accuracy and cost per (run, strategy, inference setting)."""
    import pandas as pd

    inf = data.inference
    if inf.empty:
        return pd.DataFrame()
    values = ["accuracy", "seconds_per_image", "images_per_second", "token_forwards_per_image"]
    inf = inf.copy()
    # settings keep the order the runner evaluated them in
    inf["setting"] = pd.Categorical(inf["setting"], categories=list(dict.fromkeys(inf["setting"])),
                                    ordered=True)
    table = _seed_stats(inf, ["run", "strategy", "setting"], values, data.runs)
    table["setting"] = table["setting"].astype(str)
    return table


# ---------------------------------------------------------------- formatting

def _decimals(name: str, mean: float) -> int:
    if name in METRIC_NAMES or name == "accuracy":
        return 3
    if name == "peak_memory_mb":
        return 0
    if not math.isfinite(mean) or mean == 0:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(abs(mean))))))


def mean_sd(name: str, mean: float, sd: float) -> str:
    """``0.812 ± 0.010`` (``0.812`` alone when sd is undefined; ``–`` when there is no value)."""
    if mean is None or not math.isfinite(mean):
        return "–"
    d = _decimals(name, mean)
    if sd is None or not math.isfinite(sd):
        return f"{mean:.{d}f}"
    return f"{mean:.{d}f} ± {sd:.{d}f}"


def display_summary(table: "pd.DataFrame", *, show_run: bool | None = None) -> "pd.DataFrame":
    """:func:`summary_table` as strings ``mean ± sd`` with readable column names."""
    import pandas as pd

    show_run = table["run"].nunique() > 1 if show_run is None else show_run
    rows = []
    for _, r in table.iterrows():
        row = {"run": r["run"]} if show_run else {}
        row.update({"strategy": r["strategy"], "n": int(r["n"])})
        for v in SUMMARY_VALUES:
            row[LABELS[v]] = mean_sd(v, r[f"{v}_mean"], r[f"{v}_sd"])
        rows.append(row)
    return pd.DataFrame(rows)


def display_inference(table: "pd.DataFrame", *, show_run: bool | None = None) -> "pd.DataFrame":
    """:func:`inference_table` as strings ``mean ± sd``."""
    import pandas as pd

    if table.empty:
        return pd.DataFrame()
    show_run = table["run"].nunique() > 1 if show_run is None else show_run
    rows = []
    for _, r in table.iterrows():
        row = {"run": r["run"]} if show_run else {}
        row.update({"strategy": r["strategy"], "setting": r["setting"], "n": int(r["n"])})
        for v in ("accuracy", "seconds_per_image", "images_per_second", "token_forwards_per_image"):
            row[LABELS[v]] = mean_sd(v, r[f"{v}_mean"], r[f"{v}_sd"])
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(df: "pd.DataFrame") -> str:
    """A GitHub-flavoured pipe table (text columns left-aligned, the rest right-aligned)."""
    cols = list(df.columns)

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    left = {c for c in cols if c in ("run", "strategy", "setting", "protocol", "value")}
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |",
             "|" + "|".join(":---" if c in left else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def text_table(df: "pd.DataFrame") -> str:
    """Plain aligned columns for the terminal."""
    return df.to_string(index=False)
