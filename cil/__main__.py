"""`python -m cil` is the same as the `cil` console script."""

from cil.cli import main

raise SystemExit(main())
