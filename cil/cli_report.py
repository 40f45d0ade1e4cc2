"""``cil plot``, ``cil report`` and ``cil summarize``: figures and tables from result folders.

They read the CSV/JSON result files only (no model, no rerun). matplotlib and pandas are
imported inside the command functions so ``cil --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path
from typing import Iterator

from cil.errors import UserError


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Print reader warnings (incomplete cells) as ``warning: ...`` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            from cil.results import IncompleteCellWarning

            for w in caught:
                if issubclass(w.category, IncompleteCellWarning):
                    print(f"warning: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _cmd_plot(args: argparse.Namespace) -> int:
    from cil.report.plots import make_figures

    runs = [Path(p) for p in args.run_dirs]
    if args.out:
        out = Path(args.out)
    elif len(runs) == 1:
        out = runs[0] / "figures"
    else:
        raise UserError("several run folders: say where the figures go with --out FIG_DIR")
    with _warnings_as_lines():
        paths = make_figures(runs, out, fmt=args.format)
    for p in paths:
        print(p)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cil.report.report import REPORT_HTML, write_report

    run_dir = Path(args.run_dir)
    with _warnings_as_lines():
        md = write_report(run_dir, figures=not args.no_figures)
    print(md)
    print(md.with_name(REPORT_HTML))
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from cil.report import aggregate as agg
    from cil.results import read_runs

    with _warnings_as_lines():
        data = read_runs([Path(p) for p in args.run_dirs])
    if args.per_seed:
        rank = {name: k for k, name in enumerate(agg.strategy_order(data.summary["strategy"].unique()))}
        table = data.summary.sort_values(["run", "strategy", "seed", "order"],
                                         key=lambda c: c.map(rank) if c.name == "strategy" else c)
        table = table if len(data.runs) > 1 else table.drop(columns="run")
        if args.format == "csv":
            print(table.to_csv(index=False, lineterminator="\n"), end="")
        elif args.format == "markdown":
            print(agg.markdown_table(table))
        else:
            print(agg.text_table(table))
        return 0
    table = agg.summary_table(data)
    if args.format == "csv":  # full precision, for further processing
        print(table.to_csv(index=False, lineterminator="\n"), end="")
        return 0
    shown = agg.display_summary(table)
    print(agg.markdown_table(shown) if args.format == "markdown" else agg.text_table(shown))
    inf = agg.inference_table(data)
    if not inf.empty and not args.no_inference:
        shown = agg.display_inference(inf)
        print()
        print(agg.markdown_table(shown) if args.format == "markdown" else agg.text_table(shown))
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``plot``, ``report`` and ``summarize`` to the ``cil`` parser's subcommands."""
    p = subparsers.add_parser(
        "plot", help="draw forgetting curves, accuracy matrices, bars and cost plots from result folders",
        description="Draw every figure from the result files of one or more `cil run` folders "
                    "(several folders are compared side by side). Nothing is rerun.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folder(s) of `cil run`")
    p.add_argument("--out", metavar="FIG_DIR",
                   help="folder for the figures (default RUN_DIR/figures when one run is given)")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"], help="image format (default png)")
    p.set_defaults(func=_cmd_plot)

    r = subparsers.add_parser(
        "report", help="write report.md and a self-contained report.html into a result folder",
        description="Summary table, figures, the resolved protocol and the environment of one run, "
                    "as RUN_DIR/report.md (figures in RUN_DIR/figures) and RUN_DIR/report.html "
                    "(figures embedded).")
    r.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `cil run`")
    r.add_argument("--no-figures", action="store_true", help="tables only (no figures drawn)")
    r.set_defaults(func=_cmd_report)

    s = subparsers.add_parser(
        "summarize", help="print the summary table (mean ± sd over seeds) of result folders",
        description="Print final accuracy, average incremental accuracy, forgetting, BWT and cost per "
                    "strategy, mean ± sd over seeds; several folders are listed side by side.")
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folder(s) of `cil run`")
    s.add_argument("--format", default="text", choices=["text", "markdown", "csv"],
                   help="text (default), a markdown table, or csv with full-precision mean/sd columns")
    s.add_argument("--per-seed", action="store_true", help="one row per (strategy, seed) instead of mean ± sd")
    s.add_argument("--no-inference", action="store_true", help="leave out the inference-settings table")
    s.set_defaults(func=_cmd_summarize)
