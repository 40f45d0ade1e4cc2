"""How the ``cil`` commands print what is not their result: warnings as one line each on stderr.

Shared by every command group, so a cell skipped by ``cil run`` reads the same as one skipped
by ``cil report``.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Print incomplete-cell warnings (a reader or ``write_summary`` skipping a cell) as one
    ``warning: ...`` line each on stderr, at once and once per message; other warnings as usual."""
    from cil.results import IncompleteCellWarning

    seen: set[str] = set()
    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.simplefilter("always", IncompleteCellWarning)
        show = warnings.showwarning

        def line(message, category, filename, lineno, file=None, text=None):
            if not issubclass(category, IncompleteCellWarning):
                show(message, category, filename, lineno, file, text)
            elif str(message) not in seen:  # a folder read twice warns once
                seen.add(str(message))
                print(f"warning: {message}", file=sys.stderr, flush=True)

        warnings.showwarning = line
        yield
