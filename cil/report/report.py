"""``report.md`` and a self-contained ``report.html`` for one run folder.

The report is built once as a list of blocks (headings, paragraphs, tables, figures, code) and
rendered twice, so the Markdown and the HTML always say the same thing. The HTML embeds its
figures as base64 data URIs: the file alone can be mailed to a colleague. Everything comes from
the result files (``cil.results``); nothing is rerun.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cil.report import aggregate as agg
from cil.results import RunData, atomic_write_text, read_run

if TYPE_CHECKING:
    import pandas as pd

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURE_DIR = "figures"

FIGURE_TEXT = {
    "forgetting_curves": ("Forgetting curves",
                          "Accuracy on each experience's test data after each training experience, "
                          "one panel per strategy; a line starts when its experience is trained."),
    "average_accuracy": ("Average accuracy over the stream",
                         "Mean accuracy on the experiences seen so far after each training experience."),
    "accuracy_matrix": ("Accuracy matrices",
                        "R[i][j]: accuracy on experience j after training experience i, mean over seeds."),
    "final_accuracy_forgetting": ("Final accuracy and forgetting",
                                  "Where each strategy ends; whiskers are ± sd over seeds, dots single seeds."),
    "cost": ("Cost", "Training and evaluation time over the whole stream (and peak memory when recorded)."),
    "inference_tradeoff": ("Accuracy against inference cost",
                           "The generative classifier's final accuracy for each inference setting "
                           "against its time per test image."),
}

SUMMARY_NOTE = (
    "Mean ± sample standard deviation over seeds (a single value when there is one seed). "
    "Accuracies are fractions in [0, 1]. Final accuracy: mean accuracy over all experiences after "
    "the last one; average incremental accuracy: mean over the stream of the accuracy on the "
    "experiences seen so far; forgetting: mean drop from an experience's best earlier accuracy to "
    "its final one (lower is better); BWT: mean of final minus just-learned accuracy (negative "
    "means forgetting). Times are totals over the stream in seconds, memory the peak. "
    "Per-seed numbers are in `summary.csv`."
)


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

def _distinct(values: list) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _cells_label(cells: list[tuple[str, int]], data: RunData) -> str:
    """Name a group of cells briefly: ``all cells``, ``seed 1``, ``ewc`` or ``ewc seeds 0, 1``."""
    all_seeds = data.summary.groupby("strategy")["seed"].apply(lambda x: sorted(x.tolist())).to_dict()
    by_strategy: dict[str, list[int]] = {}
    for s, seed in cells:
        by_strategy.setdefault(s, []).append(seed)
    whole = {s: sorted(v) == all_seeds.get(s) for s, v in by_strategy.items()}
    if set(by_strategy) == set(all_seeds) and all(whole.values()):
        return "all cells"
    seed_sets = {tuple(sorted(v)) for v in by_strategy.values()}
    if set(by_strategy) == set(all_seeds) and len(seed_sets) == 1:  # every strategy, some seeds
        seeds = next(iter(seed_sets))
        return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    return "; ".join(s if whole[s] else f"{s} seed{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(v)))}"
                     for s, v in by_strategy.items())


def _protocol_blocks(data: RunData) -> list[Block]:
    """The resolved protocol: what all cells share once, then each differing section per cell group."""
    import yaml

    def dump(obj) -> str:
        return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False).strip()

    rank = {name: k for k, name in enumerate(agg.strategy_order({k[1] for k in data.configs}))}
    cells = sorted(data.configs.items(), key=lambda kv: (rank[kv[0][1]], kv[0][2]))
    bodies = [((strategy, seed), {k: v for k, v in cfg.items() if k != "run"})
              for (_run, strategy, seed, _order), cfg in cells]
    keys = _distinct([k for _, body in bodies for k in body])
    common = {k: bodies[0][1][k] for k in keys
              if all(k in body and body[k] == bodies[0][1][k] for _, body in bodies)}
    blocks = [Block("h2", "Protocol"),
              Block("p", "The protocol as resolved by `cil run` (every default filled in, overrides "
                         "applied), from each cell's `config.yaml` without its `run:` section.")]
    if common:
        blocks.append(Block("code", dump(common), lang="yaml"))
    for k in keys:
        if k in common:
            continue
        groups: dict[str, tuple[Any, list]] = {}
        for cell, body in bodies:
            text = dump({k: body.get(k)})
            groups.setdefault(text, (body.get(k), []))[1].append(cell)
        per_group = {_cells_label(c, data): v for v, c in groups.values()}
        blocks.append(Block("p", f"`{k}` differs between cells:"))
        blocks.append(Block("code", dump(per_group), lang="yaml"))
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


def _environment_blocks(data: RunData) -> list[Block]:
    import pandas as pd

    runs = {key: (cfg.get("run") or {}) for key, cfg in data.configs.items()}
    rows: dict[str, list] = {}
    for key, run in sorted(runs.items()):
        for k, v in _flat({k: v for k, v in run.items() if k not in _PER_CELL + _TIMES}).items():
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
    blocks = [Block("h2", "Environment")]
    if table:
        blocks.append(Block("p", "From the `run:` section of the cells' `config.yaml`; where cells "
                                 "differ, their values are listed with commas, and times span the "
                                 "first to the last cell."))
        blocks.append(Block("table", table=pd.DataFrame(table)))
    else:
        blocks.append(Block("p", "Not recorded: the cells' `config.yaml` have no `run:` section."))
    orders: dict[str, list[tuple[str, int]]] = {}
    for (_run, strategy, seed, _order), run in sorted(runs.items()):
        if run.get("class_order") is not None:
            orders.setdefault(str(list(run["class_order"])), []).append((strategy, seed))
    if orders:
        blocks.append(Block("h3", "Class order"))
        lines = [(f"{_cells_label(cells, data)}: " if len(orders) > 1 else "") + order
                 for order, cells in orders.items()]
        blocks.append(Block("code", "\n".join(lines)))
    return blocks


def build_blocks(data: RunData, figures: list[Path], *, command: str) -> list[Block]:
    """The report's content for one run, independent of the output format."""
    from cil import __version__

    run = data.runs[0]
    s = data.summary
    protocols = ", ".join(_distinct([str(p) for p in s["protocol"]]))
    strategies = agg.strategy_order(s["strategy"].unique())
    seeds = sorted(s["seed"].unique().tolist())
    orders = _distinct([str(o) for o in s["order"]])
    exps = _distinct([int(t) for t in s["n_experiences"]])
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    blocks = [
        Block("h1", f"Results: {protocols}"),
        Block("p", f"Run folder `{run}`: {len(strategies)} strateg{'y' if len(strategies) == 1 else 'ies'} "
                   f"({', '.join(strategies)}), seed{'s' if len(seeds) > 1 else ''} "
                   f"{', '.join(map(str, seeds))}, class order{'s' if len(orders) > 1 else ''} "
                   f"{', '.join(orders)}, {' or '.join(map(str, exps))} experiences. "
                   f"Written {when} by varc-cil {__version__} with `{command}`; every number and "
                   "figure is read from the result files in this folder."),
    ]
    if data.incomplete:
        names = ", ".join(f"{p.parent.name}/{p.name}" for p in data.incomplete)
        blocks.append(Block("p", f"Skipped incomplete cells (no `metrics.json`, run interrupted?): {names}."))
    blocks += [Block("h2", "Summary"), Block("p", SUMMARY_NOTE),
               Block("table", table=agg.display_summary(agg.summary_table(data), show_run=False))]
    inf = agg.inference_table(data)
    if not inf.empty:
        blocks += [Block("h2", "Inference settings"),
                   Block("p", "Final model evaluated on the whole test stream under each inference "
                              "setting (from `inference.csv`), mean ± sd over seeds."),
                   Block("table", table=agg.display_inference(inf, show_run=False))]
    if figures:
        blocks.append(Block("h2", "Figures"))
        for path in figures:
            stem = re.sub(r"_[^_]*$", "", path.stem) if path.stem not in FIGURE_TEXT else path.stem
            title, caption = FIGURE_TEXT.get(stem, (path.stem.replace("_", " "), ""))
            blocks += [Block("h3", title), Block("figure", caption, path=path, title=title)]
    blocks += _protocol_blocks(data)
    blocks += _environment_blocks(data)
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
    """Escape, then turn `code` spans into <code>."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(f"<code>{html.escape(p[1:-1])}</code>" if p.startswith("`") and p.endswith("`")
                   and len(p) > 1 else html.escape(p) for p in parts)


_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:62rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25rem .55rem;white-space:nowrap}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#555}code{background:#f5f5f5;padding:0 .2rem;border-radius:3px}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.7rem;overflow-x:auto;font-size:.85rem}
pre code{background:none;padding:0}
""".strip()


def _html_table(df: "pd.DataFrame") -> str:
    text_cols = {"run", "strategy", "setting", "protocol", "value"}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = "".join(("<td>" if c in text_cols else '<td class="num">') + html.escape(str(v)) + "</td>"
                        for c, v in zip(df.columns, row))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


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
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(b.title or b.path.stem)}" '
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

def write_report(run_dir: Path, *, figures: bool = True, command: str | None = None) -> Path:
    """Draw the figures into ``run_dir/figures`` and write ``report.md`` and ``report.html``.

    Returns the path of ``report.md``. ``figures=False`` reuses none and draws none (tables only).
    """
    from cil.report.plots import draw_all

    run_dir = Path(run_dir)
    data = read_run(run_dir)
    paths = draw_all(data, run_dir / FIGURE_DIR, "png") if figures else []
    blocks = build_blocks(data, paths, command=command or f"cil report {run_dir}")
    md_path = run_dir / REPORT_MD
    atomic_write_text(md_path, render_markdown(blocks, run_dir))
    title = blocks[0].text
    atomic_write_text(run_dir / REPORT_HTML, render_html(blocks, title=title))
    return md_path
