"""``cil run`` and ``cil list``: run a protocol's grid of cells; list strategies, datasets, protocols.

    cil run split_digits --only naive,ewc --seeds 0,1,2 --out runs/x [--workers N | --ray-address A]
    cil run split_mnist --seeds 0 --orders natural        # one (seed, class order) pair of the grid
    cil list [strategies|datasets|protocols|all]

The protocol, the grid and the registries are imported inside the command functions, so
building the parser costs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from cil.cli.messages import warnings_as_lines
from cil.errors import UserError


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``list`` to the main parser."""
    run = sub.add_parser("run", help="run a protocol (YAML file or shipped protocol name)",
                         description="Run every strategy and seed of a protocol; finished cells are skipped.")
    run.add_argument("protocol", help="YAML file, or the name of a protocol in benchmarks/ (see 'cil list protocols')")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                     help="override a protocol value, e.g. strategies.ewc.ewc_lambda=100 (repeatable)")
    run.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1,2")
    run.add_argument("--orders", help="comma-separated class orders: natural or a shuffle seed, e.g. natural,1,2 "
                                      "(with pairing: paired, as many as seeds)")
    run.add_argument("--only", help="comma-separated strategy names of the protocol to run")
    run.add_argument("--out", help="output folder (default results/<protocol>)")
    run.add_argument("--device", help="auto, cpu or cuda (overrides the protocol)")
    run.add_argument("--threads", type=int, help="torch CPU threads (overrides the protocol)")
    run.add_argument("--data-root", help="folder holding fetched datasets (default $CIL_DATA or "
                     "~/.cache/varc-cil/data)")
    run.add_argument("--force", action="store_true", help="rerun cells that are already finished")
    run.add_argument("--workers", metavar="N|auto",
                     help="run N cells at once as tasks of a local Ray instance (auto: cores / threads); "
                          "without it, cells run one after another in this process")
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="submit the cells to a running Ray cluster (e.g. auto, or HOST:6379); "
                          "$RAY_ADDRESS is used with --workers")
    run.add_argument("--verbose", action="store_true",
                     help="with --workers/--ray-address: every cell's per-experience lines too")
    run.add_argument("--plot", action="store_true", help="draw the figures and write the report at the end")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.set_defaults(func=_cmd_run)

    lst = sub.add_parser("list", help="list strategies, datasets or protocols")
    lst.add_argument("what", nargs="?", default="all", choices=["strategies", "datasets", "protocols", "all"])
    lst.set_defaults(func=_cmd_list)


def _orders(text: str | None) -> list[str | int] | None:
    """``--orders natural,1,2`` as the protocol's ``stream.class_orders``."""
    if text is None:
        return None
    orders: list[str | int] = []
    for token in (t.strip() for t in text.split(",")):
        if token == "natural":
            orders.append(token)
        elif token.isdigit():
            orders.append(int(token))
        else:
            raise UserError(f"--orders: {token!r} is not a class order; give natural or a shuffle seed (an integer "
                            f">= 0), comma-separated, e.g. natural,1,2")
    return orders  # a repeated order is refused with the protocol's other class-order checks


def _seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` as a list of integers (each token read as a decimal number)."""
    tokens = [t.strip() for t in text.split(",")]
    bad = next((t for t in tokens if not t.isdigit()), None)
    if bad is not None:
        raise UserError(f"--seeds: {bad!r} is not a training seed; give integers >= 0, comma-separated, e.g. 0,1,2")
    return [int(t) for t in tokens]


def _cmd_run(args: argparse.Namespace) -> int:
    from cil.config import load_protocol
    from cil.grid import run_protocol

    overrides = list(args.set or [])
    if args.seeds is not None:
        overrides.append(f"seeds={json.dumps(_seeds(args.seeds))}")
    if args.device is not None:
        overrides.append(f"device={json.dumps(args.device)}")
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    if args.data_root is not None:
        if not args.data_root.strip():
            raise UserError("--data-root: give a folder (or leave the option out for $CIL_DATA or ~/.cache/varc-cil/data)")
        overrides.append(f"data_root={json.dumps(args.data_root)}")
    protocol, _ = load_protocol(args.protocol, overrides=overrides, class_orders=_orders(args.orders))
    if args.only is not None:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        names = [e.name for e in protocol.strategies]
        if not wanted:
            raise UserError(f"--only {args.only!r} names no strategy; give comma-separated names from: "
                            f"{', '.join(names)}")
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise UserError(f"--only: {unknown[0]!r} is not a strategy of protocol {protocol.name!r}; "
                            f"choose from: {', '.join(names)}")
        import dataclasses

        protocol = dataclasses.replace(protocol, strategies=[e for e in protocol.strategies if e.name in wanted])
    out = Path(args.out) if args.out else Path("results") / protocol.name
    if args.ray_address and args.workers is not None:
        raise UserError("--workers sets the size of a local Ray instance; with --ray-address the cluster's "
                        "resources decide how many cells run at once: drop one of the two")
    workers = _workers(args.workers, protocol.threads)
    # With --workers, a Ray cluster named by $RAY_ADDRESS takes the cells instead of a local instance.
    address = args.ray_address or (os.environ.get("RAY_ADDRESS") or None if workers is not None else None)
    with warnings_as_lines():
        run_protocol(protocol, out_dir=out, force=args.force, log=None if args.quiet else print,
                     workers=None if address else workers, ray_address=address, verbose=args.verbose)
    if args.plot:
        from cil.report import write_report

        report = write_report(out)  # draws the figures into out/figures too
        if not args.quiet:
            print(f"figures in {out / 'figures'}, report {report}")
    if not args.quiet:
        print(f"results written to {out}")
    return 0


def _workers(value: str | None, threads: int) -> int | None:
    """``--workers N`` or ``auto`` (the machine's cores divided by the protocol's threads)."""
    if value is None:
        return None
    if value == "auto":
        return max(1, (os.cpu_count() or 1) // threads)
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"--workers: expected a positive number of cells at once or 'auto', got {value!r}")
    return int(value)


def _cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what in ("strategies", "all"):
        from cil.strategies import registry

        print("strategies:")
        for name in registry.available():
            spec = registry.get(name)
            keys = ", ".join(f"{p.name}={p.default!r}" for p in spec.params.values())
            print(f"  {name:<12} {spec.help}")
            if keys:
                print(f"  {'':<12} keys: {keys}")
    if what in ("datasets", "all"):
        from cil.data import available_datasets

        print("datasets:")
        for name in available_datasets():
            print(f"  {name}")
    if what in ("protocols", "all"):
        from cil.config import list_protocols

        print("protocols:")
        for path in list_protocols():
            print(f"  {path.stem:<22} {path}")
    return 0
