"""``report.md`` and a self-contained ``report.html`` for one run folder, or one comparison
report across several.

The report is built once as a list of blocks (headings, paragraphs, tables, figures, code) and
rendered twice, so the Markdown and the HTML always say the same thing. The HTML embeds its
figures as base64 data URIs: the file alone can be mailed to a colleague. Every number comes
from the result files (``cil.results``); nothing is rerun. The only other file read is the
shipped protocol of the same name and description (``benchmarks/<name>.yaml``), to say whether
a run folder holds all of its strategies and which settings differ from it now.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cil.report import aggregate as agg
from cil.errors import UserError
from cil.results import RunData, atomic_write_text, read_runs

if TYPE_CHECKING:
    import pandas as pd

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURE_DIR = "figures"

#: Title and one-line caption (how to read it) of each figure.
FIGURE_TEXT = {
    "forgetting_curves": (
        "Forgetting curves",
        "One panel per strategy; each line is one experience's test accuracy (%) from the moment it "
        "is trained onward: a line that stays up is remembered, a line that drops is forgotten."),
    "accuracy_matrix": (
        "Accuracy matrices",
        "Row i is after training experience i, column j the test data of experience j, values in %: "
        "the diagonal is accuracy just after learning, the lower triangle what is left later; "
        "hatched cells (j > i) are experiences not trained yet."),
    "average_accuracy": (
        "Average accuracy over the stream",
        "Mean accuracy (%) on the experiences seen so far after each training experience: higher and "
        "flatter is better; a y axis that does not start at 0 has a break on its spine and says where it "
        "starts. With one run on the full scale, a second panel zooms on the strategies that end within "
        f"{agg.LEADING_PTS:g} points of the best; a legend entry \"a (≈ b)\" marks a curve drawn on top of b's."),
    "final_accuracy_forgetting": (
        "Final accuracy and forgetting",
        "Left: accuracy (%) on all classes after the last experience (higher is better); right: "
        "average forgetting in points, each experience's drop from its best to its final accuracy "
        "(lower is better); where a strategy has several cells, whiskers ± sd and dots the single cells; "
        "a value marked (n = k) is the mean of fewer cells than another strategy's."),
    "cost": (
        "Cost",
        "Training and evaluation time over the whole stream in minutes (log scale when they span more "
        "than 30x), and peak memory: the whole process's (mostly torch itself), drawn above the "
        "baseline named over the panel when there are strategies to compare; (n = k) as above."),
    "inference_tradeoff": (
        "Accuracy against inference cost",
        "Each marker is one inference setting of a generative classifier's final model: accuracy (%) "
        "on the timed test images (the whole test stream, or the strategy's `report_limit` fixed ones) "
        "against milliseconds per image (log scale), scored against every class learnt; up and to the "
        "left is better."),
    "robustness_severity": (
        "Accuracy under corruption",
        "The final models' accuracy (%) on a fixed class-balanced test subset, clean (severity 0) and "
        "corrupted at each severity, mean over the corruptions: a flatter line is a more robust model."),
    "robustness_drop": (
        "Drop under each corruption",
        "Points of accuracy each final model loses from the clean subset to its corrupted copies, per "
        "corruption, mean over severities: darker cells are larger drops."),
}

SUMMARY_NOTE = (
    "Mean ± sample standard deviation over cells (one cell per seed and class order; a single value "
    "when there is one). Accuracies in %, forgetting and BWT in percentage points, times in minutes "
    "(totals over the stream), peak memory in MB (the whole process's peak). Final accuracy: mean "
    "accuracy over all experiences after the last one; average incremental accuracy: mean over the "
    "stream of the accuracy on the experiences seen so far; forgetting: mean drop from an "
    "experience's best earlier accuracy to its final one (lower is better); BWT: mean of final minus "
    "just-learned accuracy (negative means forgetting); under corruption (runs with a robustness "
    "track): the final model's mean accuracy over every corruption and severity. Per-cell numbers are "
    "in `summary.csv` "
    "(accuracies as fractions, times in seconds)."
)

#: Values compared run against run in a comparison report (and by default in `cil summarize --compare`).
COMPARE_VALUES = ("final_accuracy", "average_forgetting")


@dataclass
class Block:
    """One piece of the report: kind in {h1, h2, h3, p, table, figure, code}."""

    kind: str
    text: str = ""
    table: Any = None  # DataFrame of strings for kind == "table"
    path: Path | None = None  # figure file for kind == "figure"
    lang: str = ""
    title: str = ""  # figure alt text


# ---------------------------------------------------------------- content

Cell = tuple  # (strategy, seed, order)


def _distinct(values: list) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _run_cells(data: RunData, run: str) -> list[Cell]:
    s = data.summary[data.summary["run"] == run]
    rank = {name: k for k, name in enumerate(agg.strategy_order(s["strategy"].unique()))}
    cells = [(str(r.strategy), int(r.seed), str(r.order)) for r in s.itertuples()]
    return sorted(cells, key=lambda c: (rank[c[0]], c[1], c[2]))


def _cell_name(seed: int, order: str, orders: int) -> str:
    return f"seed {seed}" + (f" {order}" if orders > 1 else "")


def _cells_label(cells: list[Cell], every: list[Cell]) -> str:
    """Name a group of a run's cells briefly: ``all cells``, ``seed 1``, ``ewc``,
    ``ewc seeds 0, 1`` (the class order is named too when the run has several)."""
    orders = len({c[2] for c in every})
    whole_run = {s: sorted(c[1:] for c in every if c[0] == s) for s in {c[0] for c in every}}
    mine: dict[str, list] = {}
    for s, seed, order in cells:
        mine.setdefault(s, []).append((seed, order))
    whole = {s: sorted(v) == whole_run[s] for s, v in mine.items()}
    if set(mine) == set(whole_run) and all(whole.values()):
        return "all cells"

    def names(v):
        v = sorted(v)
        if orders > 1:
            return ", ".join(_cell_name(seed, order, orders) for seed, order in v)
        return f"seed{'s' if len(v) > 1 else ''} {', '.join(str(seed) for seed, _ in v)}"

    groups = {tuple(sorted(v)) for v in mine.values()}
    if set(mine) == set(whole_run) and len(groups) == 1:  # every strategy, some cells
        return names(next(iter(groups)))
    sep = ", " if all(whole.values()) else "; "
    return sep.join(s if whole[s] else f"{s} {names(v)}" for s, v in mine.items())


def _dump(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False).strip()


def _bodies(data: RunData, run: str) -> list[tuple[Cell, dict]]:
    """Each cell's resolved settings without its ``run:`` section, in display order."""
    out = []
    for cell in _run_cells(data, run):
        cfg = data.configs.get((run,) + cell, {})
        out.append((cell, {k: v for k, v in cfg.items() if k != "run"}))
    return out


def _protocol_blocks(data: RunData, run: str, heading: str = "h2") -> list[Block]:
    """The resolved protocol of one run: what all cells share once, then each strategy's
    settings once, then any other section that differs, per group of cells."""
    bodies = _bodies(data, run)
    every = [c for c, _ in bodies]
    keys = _distinct([k for _, body in bodies for k in body])
    first = bodies[0][1] if bodies else {}
    common = {k: first[k] for k in keys if all(k in body and body[k] == first[k] for _, body in bodies)}
    blocks = [Block(heading, "Protocol" if heading == "h2" else f"Protocol: {run}")]
    if heading == "h2":
        blocks.append(Block("p", "The protocol as resolved by `cil run` (every default filled in, overrides "
                                 "applied), from each cell's `config.yaml` without its `run:` section: "
                                 "what all cells share, then each strategy's own settings once."))
    if common:
        blocks.append(Block("code", _dump(common), lang="yaml"))
    for k in keys:
        if k in common:
            continue
        if k == "strategies":
            merged: dict[str, Any] = {}
            per_cell = True
            for _cell, body in bodies:
                for name, entry in (body.get(k) or {}).items():
                    if name in merged and merged[name] != entry:
                        break
                    merged[name] = entry
                else:
                    continue
                break
            else:
                per_cell = False
            if not per_cell:
                blocks.append(Block("p", "`strategies` (each cell's `config.yaml` holds the protocol narrowed "
                                         "to its own strategy; every cell of a strategy has the same settings):"))
                blocks.append(Block("code", _dump({"strategies": merged}), lang="yaml"))
                continue
        groups: dict[str, tuple[Any, list]] = {}
        for cell, body in bodies:
            value = body.get(k)
            if k == "strategies" and isinstance(value, dict) and len(value) == 1:
                value = next(iter(value.values()))  # the cell's own strategy: no second level
            groups.setdefault(_dump(value), (value, []))[1].append(cell)
        per_group = {_cells_label(c, every): v for v, c in groups.values()}
        blocks.append(Block("p", f"`{k}` differs between cells:"))
        blocks.append(Block("code", _dump(per_group), lang="yaml"))
    if not common and not keys:
        blocks.append(Block("p", "The cells' `config.yaml` hold nothing but their `run:` section."))
    return blocks


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


_PER_CELL = ("strategy", "seed", "order", "class_order_seed", "class_order", "classes_per_experience", "command")
_TIMES = ("started", "finished")
#: settings that do not decide a cell's numbers (cil.runner compares the others on a rerun)
_NOT_SETTINGS = ("description", "data_root", "seeds", "threads", "pairing", "run")
_ORDER_KEYS = ("stream.class_order", "stream.class_order_seed", "stream.class_orders")


def _environment_blocks(data: RunData, run: str, heading: str = "h2") -> list[Block]:
    import pandas as pd

    every = _run_cells(data, run)
    runs = {cell: (data.configs.get((run,) + cell, {}).get("run") or {}) for cell in every}
    rows: dict[str, list] = {}
    for cell in every:
        for k, v in _flat({k: v for k, v in runs[cell].items() if k not in _PER_CELL + _TIMES}).items():
            rows.setdefault(k, []).append(v)
    table = []
    for k, values in rows.items():
        distinct = _distinct([str(v) for v in values])
        table.append({"setting": k, "value": ", ".join(distinct)})
    for k in _TIMES:  # when the cells ran: first … last
        stamps = sorted(str(r[k]) for r in runs.values() if r.get(k) is not None)
        if stamps:
            table.append({"setting": k, "value": stamps[0] if stamps[0] == stamps[-1]
                          else f"{stamps[0]} … {stamps[-1]}"})
    blocks = [Block(heading, "Environment" if heading == "h2" else f"Environment: {run}")]
    if table:
        if heading == "h2":
            blocks.append(Block("p", "From the `run:` section of the cells' `config.yaml`; where cells "
                                     "differ, their values are listed with commas, and times span the "
                                     "first to the last cell."))
        blocks.append(Block("table", table=pd.DataFrame(table)))
    else:
        blocks.append(Block("p", "Not recorded: the cells' `config.yaml` have no `run:` section."))
    orders: dict[str, list[Cell]] = {}
    for cell in every:
        if runs[cell].get("class_order") is not None:
            orders.setdefault(str(list(runs[cell]["class_order"])), []).append(cell)
    if orders:
        blocks.append(Block("p", "Class order (classes in the order they arrive):"))
        lines = [(f"{_cells_label(cells, every)}: " if len(orders) > 1 else "") + order
                 for order, cells in orders.items()]
        blocks.append(Block("code", "\n".join(lines)))
    return blocks


def _shipped_protocol(name: str, description: Any) -> tuple[dict, Path] | None:
    """The shipped protocol of that name (``benchmarks/<name>.yaml``), resolved, when its
    description is the cells' one too; None when there is none or it cannot be read."""
    try:
        from cil.config import load_protocol, protocols_dir, resolved_dict

        path = protocols_dir() / f"{name}.yaml"
        if not path.is_file():
            return None
        protocol, _raw = load_protocol(str(path))
        resolved = resolved_dict(protocol)
    except Exception:  # an edited or newer file: then nothing can be said about it
        return None
    if resolved.get("description") != description:
        return None
    return resolved, path


def _short(value: Any) -> str:
    """A setting's value as YAML writes it inline (``null``, ``[[2, 3]]``)."""
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def _settings_diff(cell_cfg: dict, shipped: dict, strategy: str) -> list[str]:
    """``key: value (shipped: other)`` for every setting both have and that differs."""
    mine = _flat({k: v for k, v in cell_cfg.items() if k not in _NOT_SETTINGS})
    ref = {k: v for k, v in shipped.items() if k not in _NOT_SETTINGS + ("strategies",)}
    ref["strategies"] = {strategy: shipped.get("strategies", {}).get(strategy)}
    ref = _flat(ref)
    out = []
    for k, v in mine.items():
        if k in ref and k not in _ORDER_KEYS and ref[k] != v:
            out.append(f"{k}: {_short(v)} (shipped: {_short(ref[k])})")
    return out


def _selection_blocks(data: RunData, run: str, heading: str = "h2") -> list[Block]:
    """What the run folder holds (strategies, seeds, class orders), set against its protocol."""
    import pandas as pd

    every = _run_cells(data, run)
    strategies = _distinct([c[0] for c in every])
    seeds = sorted({c[1] for c in every})
    orders = _distinct([c[2] for c in every])
    bodies = dict(_bodies(data, run))
    protos = _distinct([str(p) for p in data.summary.loc[data.summary["run"] == run, "protocol"]])
    blocks = [Block(heading, "What was run" if heading == "h2" else f"What was run: {run}")]
    lines = [f"This folder holds {_plural(len(every), 'complete cell')} of protocol "
             f"{', '.join(f'`{p}`' for p in protos)}: {_plural(len(strategies), 'strategy', 'strategies')} "
             f"({', '.join(strategies)}), {_plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))}), "
             f"{_plural(len(orders), 'class order')} ({', '.join(orders)})."]
    per_strategy = {s: {(c[1], c[2]) for c in every if c[0] == s} for s in strategies}
    grid = {(seed, order) for c in every for seed, order in [(c[1], c[2])]}
    ragged = [s for s in strategies if per_strategy[s] != grid]
    if ragged:
        lines.append(f"Not every strategy has every seed and class order: {', '.join(ragged)} "
                     "lack some (see the `cells` column of the summary).")
    asked = sorted({int(x) for body in bodies.values() for x in (body.get("seeds") or [])})
    if asked and set(asked) != set(seeds):
        missing = sorted(set(asked) - set(seeds))
        if missing:
            lines.append(f"The run asked for seeds {', '.join(map(str, asked))}; "
                         f"no complete cell of seed{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(str, missing))}.")
    descriptions = _distinct([body.get("description") for body in bodies.values()])
    shipped = _shipped_protocol(protos[0], descriptions[0]) if len(protos) == 1 and len(descriptions) == 1 else None
    if shipped is not None:
        ref, path = shipped
        listed = list(ref.get("strategies") or {})
        where = f"the shipped protocol `{protos[0]}` (`{path.parent.name}/{path.name}`, same description)"
        absent = [s for s in listed if s not in strategies]
        extra = [s for s in strategies if s not in listed]
        if not absent and not extra:
            lines.append(f"These are all {len(listed)} strategies of {where}.")
        else:
            if absent:
                lines.append(f"**A subset:** {len(strategies) - len(extra)} of the {len(listed)} strategies "
                             f"of {where}; not in this folder: {', '.join(absent)}.")
            if extra:
                lines.append(f"Not strategies of {where}: {', '.join(extra)}.")
        diffs = []
        for s in strategies:
            if s in listed:
                cell = next(c for c in every if c[0] == s)
                d = _settings_diff(bodies.get(cell, {}), ref, s)
                if d:
                    shown = "; ".join(f"`{x}`" for x in d[:6]) + (f" and {len(d) - 6} more" if len(d) > 6 else "")
                    diffs.append(f"{s}: {shown}")
        if diffs:
            lines.append("Settings that differ from that file as it is now (the cells' `config.yaml` "
                         "record what was run): " + " · ".join(diffs) + ".")
    else:
        lines.append("Whether these are all of the protocol's strategies cannot be told from the result "
                     f"files: no shipped protocol `{protos[0]}` with the same description to compare with."
                     if len(protos) == 1 else
                     "The cells come from several protocols; compare their numbers with care.")
    blocks.append(Block("p", " ".join(lines)))
    commands: dict[str, list[Cell]] = {}
    for cell in every:
        cmd = (data.configs.get((run,) + cell, {}).get("run") or {}).get("command")
        commands.setdefault(str(cmd) if cmd else "(not recorded)", []).append(cell)
    if commands:
        rows = [{"command": f"`{cmd}`" if cmd != "(not recorded)" else cmd,
                 "cells run": _cells_label(cells, every)} for cmd, cells in commands.items()]
        blocks.append(Block("p", "The commands that made the cells (`run.command` of their `config.yaml`):"))
        blocks.append(Block("table", table=pd.DataFrame(rows)))
    return blocks


def _figure_title(path: Path, runs: list[str]) -> tuple[str, str]:
    from cil.report.plots import PER_RUN_FIGURES, figure_kind, _slug

    kind = figure_kind(path)
    if kind is None:
        return path.stem.replace("_", " "), ""
    title, caption = FIGURE_TEXT[kind]
    if kind in PER_RUN_FIGURES and len(runs) > 1:
        run = next((r for r in runs if path.stem == f"{kind}_{_slug(r)}"), None)
        if run:
            title = f"{title}: {run}"
    return title, caption


def _robustness_display(table: "pd.DataFrame", *, show_run: bool) -> "pd.DataFrame":
    import pandas as pd

    rows = []
    for _, r in table.iterrows():
        row = {"run": r["run"]} if show_run else {}
        row.update({"strategy": r["strategy"], "kind": "generative" if r["generative"] else "discriminative",
                    "clean (%)": f"{100 * r['clean']:.1f}", "corrupted (%)": f"{100 * r['corrupted']:.1f}",
                    "drop (pts)": f"{100 * r['drop']:.1f}",
                    "time vs clean eval": "–" if r["time_ratio"] != r["time_ratio"] else f"{r['time_ratio']:.1f}x"})
        rows.append(row)
    return pd.DataFrame(rows)


def _robustness_sentence(table: "pd.DataFrame") -> str:
    """One sentence: how much accuracy corruption costs generative against discriminative classifiers."""
    head = ("The final models on a fixed class-balanced test subset, clean and under every corruption and "
            "severity of the protocol's `robustness:` section (mean over corruptions, severities and cells); "
            "the last column is the time the robustness evaluation added, as a multiple of the final clean "
            "evaluation's time. ")
    # A model near chance has little to lose: averaging its small drop in would flatter its
    # family, so the averages take the leading classifiers by clean accuracy.
    strong = table[table["clean"] >= table["clean"].max() - agg.LEADING_PTS / 100]
    if strong["generative"].all() or not strong["generative"].any():
        strong = table
    gen, disc = strong[strong["generative"]], strong[~strong["generative"]]
    if gen.empty or disc.empty:
        return head
    left_out = [str(x) for x in table["strategy"] if x not in set(strong["strategy"])]
    note = (f" (the classifiers within {agg.LEADING_PTS:g} points of the best clean accuracy; left out: "
            f"{', '.join(left_out)})"
            if left_out else "")
    best = disc.loc[disc["corrupted"].idxmax()]
    return head + (f"Generative classifiers ({', '.join(gen['strategy'])}) lose {100 * gen['drop'].mean():.1f} "
                   f"points on average, discriminative ones ({', '.join(disc['strategy'])}) "
                   f"{100 * disc['drop'].mean():.1f}{note}; under corruption the best generative one reaches "
                   f"{100 * gen['corrupted'].max():.1f}% and the best discriminative one ({best['strategy']}) "
                   f"{100 * best['corrupted']:.1f}%.")


def build_blocks(data: RunData, figures: list[Path], *, command: str,
                 out_dir: Path | None = None) -> list[Block]:
    """The report's content for one run, or a comparison of several, independent of the format."""
    import pandas as pd

    from cil import __version__

    runs = data.runs
    many = len(runs) > 1
    s = data.summary
    protocols = agg.protocols(data)
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if many:
        blocks = [Block("h1", f"Comparison: {', '.join(runs)}")]
        table = [{"run": r, "folder": f"`{data.run_dirs[r]}`",
                  "protocol": ", ".join(_distinct([str(p) for p in s.loc[s["run"] == r, "protocol"]])),
                  "strategies": str(s.loc[s["run"] == r, "strategy"].nunique()),
                  "cells": str(int((s["run"] == r).sum()))} for r in runs]
        blocks.append(Block("p", f"{len(runs)} run folders side by side; differences (Δ) are to the first, "
                                 f"`{runs[0]}`. Written {when} by varc-cil {__version__} with `{command}`; "
                                 "every number and figure is read from the result files of these folders."))
        blocks.append(Block("table", table=pd.DataFrame(table)))
    else:
        run = runs[0]
        blocks = [Block("h1", f"Results: {', '.join(protocols)}"),
                  Block("p", f"Run folder `{run}`. Written {when} by varc-cil {__version__} with "
                             f"`{command}`; every number and figure is read from the result files in "
                             "this folder.")]
    warning = agg.mixed_protocols_warning(data)
    if warning:
        blocks.append(Block("p", f"**Warning:** {warning}."))
    if data.incomplete:
        names = ", ".join(f"{p.parent.name}/{p.name}" for p in data.incomplete)
        blocks.append(Block("p", f"Skipped incomplete cells (no `metrics.json`, run interrupted?): {names}."))
    for run in runs:
        blocks += _selection_blocks(data, run, "h3" if many else "h2")
    if many:
        blocks.insert(next(k for k, b in enumerate(blocks) if b.kind == "h3"), Block("h2", "What was run"))
    table = agg.summary_table(data)
    blocks += [Block("h2", "Summary"), Block("p", SUMMARY_NOTE),
               Block("table", table=agg.display_summary(table, show_run=many, show_protocol=many))]
    if many:
        blocks.append(Block("h2", "Run against run"))
        for value in COMPARE_VALUES:
            label = agg.LABELS[value]
            blocks += [Block("p", f"{label[0].upper() + label[1:]}, each run's mean ± sd; Δ: the run's mean "
                                  f"minus `{runs[0]}`'s (– where a run lacks the strategy)."),
                       Block("table", table=agg.compare_table(table, value, runs))]
    rob = agg.robustness_table(data)
    if not rob.empty:
        blocks += [Block("h2", "Robustness"), Block("p", _robustness_sentence(rob)),
                   Block("table", table=_robustness_display(rob, show_run=many))]
    inf = agg.inference_table(data)
    if not inf.empty:
        blocks += [Block("h2", "Inference settings"),
                   Block("p", "Final model evaluated under each inference setting on the timed test "
                              "images (the whole test stream, or the strategy's `report_limit` fixed "
                              "ones, so accuracy can differ from the summary's) (from `inference.csv`), "
                              "mean ± sd over cells; accuracy in %. `classes`: "
                              "the candidate classes scored against, every class learnt or (with "
                              "`report_classes`) the first ones learnt, on those classes' images."),
                   Block("table", table=agg.display_inference(inf, show_run=many))]
    if figures:
        blocks.append(Block("h2", "Figures"))
        for path in figures:
            title, caption = _figure_title(path, runs)
            blocks += [Block("h3", title), Block("figure", caption, path=path, title=title)]
    for run in runs:
        blocks += _protocol_blocks(data, run, "h3" if many else "h2")
    if many:
        first = next(k for k, b in enumerate(blocks) if b.kind == "h3" and b.text.startswith("Protocol: "))
        blocks.insert(first, Block("h2", "Protocols"))
        blocks.insert(first + 1, Block("p", "Each run's protocol as resolved by `cil run`, from its cells' "
                                            "`config.yaml` without their `run:` section."))
    for run in runs:
        blocks += _environment_blocks(data, run, "h3" if many else "h2")
    if many:
        first = next(k for k, b in enumerate(blocks) if b.kind == "h3" and b.text.startswith("Environment: "))
        blocks.insert(first, Block("h2", "Environment"))
    return blocks


# ---------------------------------------------------------------- rendering

def _md_table(df: "pd.DataFrame") -> str:
    return agg.markdown_table(df)


def render_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown with figures linked relative to ``base`` (the report's folder)."""
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            out.append(_md_table(b.table))
        elif b.kind == "figure":
            rel = b.path.relative_to(base).as_posix() if b.path.is_relative_to(base) else b.path.as_posix()
            out.append(f"![{b.title or b.path.stem}]({rel})" + (f"\n\n*{b.text}*" if b.text else ""))
        elif b.kind == "code":
            out.append(f"```{b.lang}\n{b.text}\n```")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then turn `code` spans into <code> and **bold** into <strong>."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) > 1:
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html.escape(p)))
    return "".join(out)


_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:62rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25rem .55rem;white-space:nowrap}th{background:#f3f3f3;white-space:normal;vertical-align:bottom}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.wrap{white-space:normal;min-width:12rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#555}code{background:#f5f5f5;padding:0 .2rem;border-radius:3px}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.7rem;overflow-x:auto;font-size:.85rem}
pre code{background:none;padding:0}
""".strip()


_WRAP = {"command", "cells run", "value", "folder"}


def _html_table(df: "pd.DataFrame") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = "".join(("<td>" if c in agg.TEXT_COLUMNS and c not in _WRAP else '<td class="wrap">' if c in _WRAP
                         else '<td class="num">') + _inline_html(str(v)) + "</td>"
                        for c, v in zip(df.columns, row))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _img_width(raw: bytes) -> str:
    """A PNG's width as a share of the page: figures narrower than a full page (7 in at the
    figures' dpi) are not blown up, so every figure's text shows at the same size."""
    from cil.report.plots import DPI, PAGE_WIDTH_IN

    if raw[:8] != b"\x89PNG\r\n\x1a\n" or len(raw) < 24:
        return ""
    share = min(1.0, int.from_bytes(raw[16:20], "big") / (DPI * PAGE_WIDTH_IN))
    return f' style="width:{100 * share:.0f}%"'


def render_html(blocks: list[Block], *, title: str) -> str:
    """One HTML file with every figure embedded as a base64 data URI."""
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{_inline_html(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif b.kind == "table":
            out.append(_html_table(b.table))
        elif b.kind == "figure":
            mime = _MIME.get(b.path.suffix.lower())
            if mime is None:  # pdf cannot be shown inline; link it
                out.append(f'<p><a href="{html.escape(b.path.name)}">{html.escape(b.path.name)}</a></p>')
                continue
            raw = b.path.read_bytes()
            data = base64.b64encode(raw).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(b.title or b.path.stem)}"{_img_width(raw)} '
                       f'src="data:{mime};base64,{data}">'
                       f"<figcaption>{_inline_html(b.text)}</figcaption></figure>")
        elif b.kind == "code":
            out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
    body = "\n".join(out)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


# ---------------------------------------------------------------- entry point

def write_report(run_dirs: Path | Sequence[Path], *, out_dir: Path | None = None, figures: bool = True,
                 command: str | None = None) -> Path:
    """Draw the figures and write ``report.md`` and a self-contained ``report.html``.

    One run folder: into that folder (figures in ``RUN_DIR/figures``) unless ``out_dir`` says
    otherwise. Several: one comparison report across them, written to ``out_dir``, which is then
    required (a comparison belongs to none of the runs). Returns the path of ``report.md``.
    ``figures=False`` draws none (tables only).
    """
    from cil.report.plots import draw_all

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    run_dirs = [Path(p) for p in run_dirs]
    if len(run_dirs) > 1 and out_dir is None:
        raise UserError("several run folders make one comparison report: say where it goes with --out DIR")
    out = Path(out_dir) if out_dir is not None else run_dirs[0]
    data = read_runs(run_dirs)
    if out_dir is not None and len(run_dirs) == 1 and not out.exists():
        out.mkdir(parents=True, exist_ok=True)
    paths = draw_all(data, out / FIGURE_DIR, "png") if figures else []
    default = "cil report " + " ".join(str(p) for p in run_dirs) + (f" --out {out_dir}" if out_dir is not None else "")
    blocks = build_blocks(data, paths, command=command or default, out_dir=out)
    md_path = out / REPORT_MD
    atomic_write_text(md_path, render_markdown(blocks, out))
    title = blocks[0].text
    atomic_write_text(out / REPORT_HTML, render_html(blocks, title=title))
    return md_path
