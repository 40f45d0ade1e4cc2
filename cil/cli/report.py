"""``cil plot``, ``cil report`` and ``cil summarize``: figures and tables from result folders.

They read the CSV/JSON result files only (no model, no rerun). matplotlib and pandas are
imported inside the command functions so ``cil --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cil.cli.messages import warnings_as_lines
from cil.errors import UserError


def _warn_mixed(data) -> None:
    """One ``warning:`` line on stderr when the runs mix protocols."""
    from cil.report import aggregate as agg

    line = agg.mixed_protocols_warning(data)
    if line:
        print(f"warning: {line}", file=sys.stderr)


def _cmd_plot(args: argparse.Namespace) -> int:
    from cil.report.plots import draw_all
    from cil.results import read_runs

    runs = [Path(p) for p in args.run_dirs]
    if args.out:
        out = Path(args.out)
    elif len(runs) == 1:
        out = runs[0] / "figures"
    else:
        raise UserError("several run folders: say where the figures go with --out FIG_DIR")
    with warnings_as_lines():
        data = read_runs(runs)
    _warn_mixed(data)
    with warnings_as_lines():
        paths = draw_all(data, out, fmt=args.format)
    for p in paths:
        print(p)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cil.report.report import REPORT_HTML, write_report
    from cil.results import read_runs

    runs = [Path(p) for p in args.run_dirs]
    if len(runs) > 1 and not args.out:
        raise UserError("several run folders make one comparison report: say where it goes with --out DIR")
    with warnings_as_lines():
        _warn_mixed(read_runs(runs))
        md = write_report(runs, out_dir=Path(args.out) if args.out else None, figures=not args.no_figures)
    print(md)
    print(md.with_name(REPORT_HTML))
    return 0


def _print_table(table, fmt: str) -> None:
    from cil.report import aggregate as agg

    if fmt == "csv":
        print(table.to_csv(index=False, lineterminator="\n"), end="")
    elif fmt == "markdown":
        print(agg.markdown_table(table))
    else:
        print(agg.text_table(table))


def _cmd_summarize(args: argparse.Namespace) -> int:
    from cil.report import aggregate as agg
    from cil.results import read_runs

    with warnings_as_lines():
        data = read_runs([Path(p) for p in args.run_dirs])
    _warn_mixed(data)
    many = len(data.runs) > 1
    if args.compare:
        values = [v.strip() for v in args.values.split(",") if v.strip()]
        allowed = agg.SUMMARY_VALUES
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise UserError(f"--values: {bad[0] if bad else args.values!r} is not a summary value; "
                            f"choose from: {', '.join(allowed)}")
        if not many:
            raise UserError("--compare needs two or more run folders (strategies x runs)")
        table = agg.summary_table(data)
        for k, value in enumerate(values):
            if args.format != "csv":
                print(("\n" if k else "") + f"{agg.LABELS[value]}: each run, and Δ = run minus {data.runs[0]}")
            pivot = agg.compare_table(table, value, data.runs)
            if args.format == "csv":
                pivot.insert(0, "value", agg.LABELS[value])
                print(pivot.to_csv(index=False, header=k == 0, lineterminator="\n"), end="")
            else:
                _print_table(pivot, args.format)
        return 0
    if args.per_seed:
        if args.format == "csv":  # the result files' units, full precision
            table = data.summary if many else data.summary.drop(columns="run")
            rank = {name: k for k, name in enumerate(agg.strategy_order(table["strategy"].unique()))}
            table = table.assign(_s=table["strategy"].map(rank)).sort_values(
                (["run"] if many else []) + ["_s", "seed", "order"], kind="stable").drop(columns="_s")
            _print_table(table, "csv")
        else:
            _print_table(agg.display_per_seed(data.summary, show_run=many), args.format)
        return 0
    table = agg.summary_table(data)
    if args.format == "csv":  # full precision in the result files' units (fractions, seconds), for processing
        _print_table(table, "csv")
        return 0
    _print_table(agg.display_summary(table), args.format)
    inf = agg.inference_table(data)
    if not inf.empty and not args.no_inference:
        print()
        _print_table(agg.display_inference(inf), args.format)
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``plot``, ``report`` and ``summarize`` to the ``cil`` parser's subcommands."""
    p = _add_runs_command(
        subparsers, "plot", _cmd_plot,
        help="draw forgetting curves, accuracy matrices, bars and cost plots from result folders",
        description="Draw every figure from the result files of one or more `cil run` folders "
                    "(several folders are compared side by side on shared axes). Nothing is rerun.")
    p.add_argument("--out", metavar="FIG_DIR",
                   help="folder for the figures (default RUN_DIR/figures when one run is given)")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"], help="image format (default png)")

    r = _add_runs_command(
        subparsers, "report", _cmd_report,
        help="write report.md and a self-contained report.html (one run, or a comparison of several)",
        description="Summary table, figures, what was run, the resolved protocol and the environment. "
                    "One run: RUN_DIR/report.md (figures in RUN_DIR/figures) and RUN_DIR/report.html "
                    "(figures embedded). Several runs: one comparison report (summary, run-against-run "
                    "tables, figures side by side) written to --out DIR, which is then required.")
    r.add_argument("--out", metavar="DIR",
                   help="where report.md, report.html and figures/ go (default RUN_DIR for one run; "
                        "required for several)")
    r.add_argument("--no-figures", action="store_true", help="tables only (no figures drawn)")

    s = _add_runs_command(
        subparsers, "summarize", _cmd_summarize,
        help="print the summary table (mean ± sd over cells) of result folders",
        description="Print final accuracy (%), average incremental accuracy (%), forgetting and BWT "
                    "(points), accuracy under corruption (%, runs with a robustness track), "
                    "training and evaluation time (minutes) and peak memory (MB) per "
                    "strategy, mean ± sd over cells (seed x class order), with each run's protocol; "
                    "several folders are listed together, and a warning goes to stderr when they "
                    "come from different protocols. --format csv keeps the result files' units "
                    "(fractions, seconds) at full precision.")
    s.add_argument("--format", default="text", choices=["text", "markdown", "csv"],
                   help="text (default), a markdown table, or csv with full-precision mean/sd columns")
    s.add_argument("--per-seed", action="store_true",
                   help="one row per cell (strategy, seed, class order) instead of mean ± sd")
    s.add_argument("--compare", action="store_true",
                   help="pivot: one row per strategy, one column per run, and the difference of each "
                        "run to the first (needs two or more runs)")
    s.add_argument("--values", default="final_accuracy,average_forgetting", metavar="LIST",
                   help="with --compare: comma-separated summary values to pivot (default "
                        "final_accuracy,average_forgetting; also average_incremental_accuracy, bwt, "
                        "robust_accuracy, train_seconds, eval_seconds, peak_memory_mb)")
    s.add_argument("--no-inference", action="store_true", help="leave out the inference-settings table")


def _add_runs_command(subparsers, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that reads one or more run folders (``RUN_DIR ...``) and runs ``func``."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folder(s) of `cil run`")
    parser.set_defaults(func=func)
    return parser
