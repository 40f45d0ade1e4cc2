"""Figures, reports and summary tables drawn from result files alone (see cil.results).

Submodules: :mod:`~cil.report.aggregate` (pandas tables over seeds and runs),
:mod:`~cil.report.plots` (matplotlib figures) and :mod:`~cil.report.report` (report.md/html of
one run, or one comparison report across several).
``make_figures`` and ``write_report`` are re-exported lazily, so ``import cil.report`` does not
import matplotlib or pandas.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_figures", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "make_figures":
        from cil.report.plots import make_figures

        return make_figures
    if name == "write_report":
        from cil.report.report import write_report

        return write_report
    raise AttributeError(f"module 'cil.report' has no attribute {name!r}")
