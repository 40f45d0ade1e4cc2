"""Wall time of a protocol's grid with one worker against two, measured in one run.

    python benchmarks/bench_grid.py                       # split_digits, then Split MNIST's baselines
    python benchmarks/bench_grid.py --protocols split_digits

For each protocol, `cil run PROTOCOL --workers 1` and then `--workers 2` run into fresh folders
(each starts and stops its own local Ray instance, so both pay the same start-up), and the
script prints both wall times, their ratio and whether every cell's final accuracy agrees.
Split MNIST runs its baselines only (every strategy but the VAR classifiers; `cil data fetch
mnist` first), for the protocol's first training seed and class order only, so that the figure
stays comparable when the protocol gains seeds and orders. Tests never time anything; this
script is where the speed-up is measured.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VAR_STRATEGIES = {"varc", "avarc_plus"}


def baselines_first_cell(protocol: str) -> list[str]:
    """``cil run`` options that keep the protocol's baselines at its first (seed, class order)."""
    from cil.config import load_protocol

    proto, _ = load_protocol(protocol)
    first = proto.cells()[0]
    kind = first.order.order  # natural, shuffled (drawn from its seed) or an explicit list
    order = first.order.seed if kind == "shuffled" else kind
    options = ["--only", ",".join(e.name for e in proto.strategies if e.strategy not in VAR_STRATEGIES),
               "--seeds", str(first.seed)]
    if len(proto.class_orders()) > 1:
        options += ["--set", f"stream.class_orders=[{order}]"]
    return options


def timed_run(protocol: str, workers: int, out: Path, options: list[str]) -> float:
    cmd = [sys.executable, "-m", "cil", "run", protocol, "--out", str(out), "--quiet", "--workers", str(workers)]
    cmd += options
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def final_accuracies(out: Path) -> dict[str, float]:
    import pandas as pd

    s = pd.read_csv(out / "summary.csv")
    return dict(zip(s["strategy"] + "/" + s["seed"].astype(str), s["final_accuracy"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=["split_digits", "split_mnist"])
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for protocol in args.protocols:
            options = baselines_first_cell(protocol) if protocol == "split_mnist" else []
            what = f"{protocol} ({'baselines, ' + ' '.join(options[1:]) if options else 'every strategy'})"
            print(f"{what}", flush=True)
            seconds = {}
            for workers in (1, 2):
                out = root / f"{protocol}_workers{workers}"
                seconds[workers] = timed_run(protocol, workers, out, options)
                print(f"  --workers {workers}: {seconds[workers] / 60:.2f} min", flush=True)
            same = final_accuracies(root / f"{protocol}_workers1") == final_accuracies(root / f"{protocol}_workers2")
            print(f"  ratio workers 1 / workers 2: {seconds[1] / seconds[2]:.2f}x; "
                  f"final accuracies identical: {same}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
