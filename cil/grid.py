"""The grid of a protocol: every (strategy, training seed, class order) cell, in this process or
as Ray tasks on a local instance or a cluster.

The driver (this module, in the ``cil run`` process) is the only writer of the run folder: it
holds the folder's lock, decides which cells to run (a finished cell made with the same
settings is skipped), hands cells out, and writes each finished cell's files from the records
the cell returns, so a cluster without a shared filesystem works. A cell that raises is
reported and the others go on; the run then ends with one line naming the failed cells.

Without ``workers`` or a Ray address nothing of Ray is imported: the quick path stays light.
"""

from __future__ import annotations

import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cil.config import Cell, ClassOrder, Protocol
from cil.errors import DiskFullError, UserError, os_error

MAX_RETRIES = 2  # a cell whose worker process dies is run again at most this often


class GridFailure(UserError):
    """Some cells raised; the others finished and were written."""


@dataclass
class _Progress:
    """One line over the grid, rewritten in place on a terminal: done / running / failed,
    elapsed time and an estimate of the time left: the grid's pace so far, counting the cells
    finished and the finished fraction of those running (``partial``, cell label -> fraction,
    from their experiences), so that an estimate appears before the first long cell ends.
    Written to a file or pipe instead, the line is printed once after each finished cell."""

    total: int
    log: Callable[[str], None] | None
    done: int = 0
    failed: int = 0
    running: int = 0
    start: float = field(default_factory=time.perf_counter)
    live: bool = False
    partial: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.live = self.log is not None and self.total > 0 and sys.stderr.isatty()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        finished = self.done + self.failed
        progress = finished + sum(self.partial.values())
        left = f", about {_clock(elapsed / progress * (self.total - progress))} left" if progress else ""
        return (f"grid: {finished}/{self.total} cells: done {self.done}, running {self.running}, "
                f"failed {self.failed}; {_clock(elapsed)} elapsed{left}")

    def update(self, *, done: int = 0, failed: int = 0, running: int | None = None) -> None:
        self.done += done
        self.failed += failed
        if running is not None:
            self.running = running
        if self.live:
            print(f"\r\033[K{self.line()}", end="", file=sys.stderr, flush=True)
        elif self.log is not None and (done or failed):
            self.log(self.line())

    def clear(self) -> None:
        """Wipe the line, so that a cell's own line can be printed in its place."""
        if self.live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def run_protocol(protocol: Protocol, *, out_dir: Path, force: bool = False, log: Callable[[str], None] | None = print,
                 workers: int | None = None, ray_address: str | None = None, verbose: bool = False) -> Path:
    """Run every cell not yet finished; rewrite summary.csv; return ``out_dir``.

    ``workers``: run cells as tasks of a local Ray instance, that many at once; ``ray_address``:
    submit them to a running Ray cluster instead. Neither: one after another in this process.
    Every setting is checked against the dataset before any cell trains.
    """
    import torch

    from cil import results, runfolder
    from cil.runner import _quiet_avalanche_deprecations, protocol_device
    from cil.strategies import registry
    from cil.streams import resolve_class_order

    on_ray = workers is not None or ray_address is not None
    with _quiet_avalanche_deprecations():
        torch.set_num_threads(protocol.threads)
        if not on_ray:
            protocol_device(protocol.device)  # fail before any work when CUDA is asked for and absent
        dataset, stream = _cell_stream(protocol, protocol.class_orders()[0])
        for order in protocol.class_orders():
            resolve_class_order(dataset.n_classes, order.order, order.seed)
        for entry in protocol.strategies:  # settings that depend on the images, before any cell trains
            registry.validate_params(entry.strategy, entry.params, where=f"strategies.{entry.name}",
                                     image_shape=dataset.image_shape)
        runfolder.prepare(out_dir)
        with runfolder.RunLock(out_dir):
            try:
                runfolder.sweep_temp_files(out_dir)
                todo = _cells_to_run(protocol, out_dir, force=force, log=log)
                if log is not None:
                    orders = ", ".join(o.label for o in protocol.class_orders())
                    log(f"protocol {protocol.name}: dataset {protocol.dataset} ({dataset.n_classes} classes, "
                        f"{len(dataset.y_train)} train / {len(dataset.y_test)} test), {stream.n_experiences} "
                        f"experiences, class order{'s' if ',' in orders else ''} {orders}; {len(todo)} cell"
                        f"{'' if len(todo) == 1 else 's'} to run; results in {out_dir}")
                writer = _Writer(protocol, out_dir, log=log)
                if on_ray and todo:
                    _run_on_ray(protocol, todo, writer, force=force, workers=workers, address=ray_address,
                                verbose=verbose)
                else:
                    for cell in todo:
                        writer.run_here(cell, *_cell_stream(protocol, cell.order), force=force)
                results.write_summary(out_dir)
            except OSError as exc:
                raise os_error(exc) from None
        writer.raise_failures(len(todo))
    return out_dir


def _cells_to_run(protocol: Protocol, out_dir: Path, *, force: bool, log: Callable[[str], None] | None) -> list[Cell]:
    """The cells to run. A finished cell is skipped when its stored settings equal the protocol's;
    one made with other settings stops the run (before any cell trains) with a line naming the
    differing keys, unless ``force``."""
    from cil import results
    from cil.runner import cell_settings, settings_differences, strategy_defaults

    todo = []
    defaults = strategy_defaults(protocol)
    for cell in protocol.cells():
        folder_order = protocol.folder_order(cell)
        if force or not results.cell_done(out_dir, cell.entry.name, cell.seed, folder_order):
            todo.append(cell)
            continue
        folder = results.cell_dir(out_dir, cell.entry.name, cell.seed, folder_order)
        diffs = settings_differences(results.read_cell_config(folder), cell_settings(protocol, cell),
                                     defaults=defaults)
        if diffs:
            more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
            raise UserError(f"{folder} was finished with other settings ({'; '.join(diffs[:3])}{more}); "
                            "rerun with --force to replace it, or choose another --out")
        if log is not None:
            log(f"[{protocol.cell_name(cell)}] already done with the same settings, skipping (use --force to rerun)")
    return todo


def _cell_stream(protocol: Protocol, order: ClassOrder):
    """The dataset and the stream of one class order (the dataset is loaded once per process)."""
    from cil.streams import protocol_stream

    narrowed = protocol.for_cell(Cell(entry=protocol.strategies[0], seed=0, order=order))
    key = (protocol.dataset, str(protocol.data_root), repr(narrowed.stream))  # everything the stream depends on
    if key not in _STREAMS:
        _STREAMS[key] = protocol_stream(narrowed)
    return _STREAMS[key]


_STREAMS: dict[tuple, Any] = {}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _Writer:
    """The driver's side of every cell: write what finished, record what failed."""

    def __init__(self, protocol: Protocol, out_dir: Path, *, log: Callable[[str], None] | None) -> None:
        self.protocol, self.out_dir, self.log = protocol, Path(out_dir), log
        self.failures: list[str] = []

    def folder(self, cell: Cell) -> Path:
        from cil import results

        return results.cell_dir(self.out_dir, cell.entry.name, cell.seed, self.protocol.folder_order(cell))

    def run_here(self, cell: Cell, dataset, stream, *, force: bool) -> None:
        """Run one cell in this process (the serial path)."""
        from cil.runner import run_cell

        t0 = time.perf_counter()
        try:
            record = run_cell(self.protocol, cell, dataset=dataset, stream=stream, log=self.log, force=force,
                              checkpoint_dir=self.folder(cell) / "checkpoints", log_dir=self.folder(cell) / "logs")
        except DiskFullError:
            raise
        except Exception as exc:  # noqa: BLE001 (reported, and the other cells go on)
            self.failed(cell, exc, traceback.format_exc())
            return
        self.write(record, seconds=time.perf_counter() - t0)

    def write(self, record, *, seconds: float | None = None) -> None:
        from cil import results
        from cil.runner import _clear_checkpoints

        cell = record.cell
        results.write_cell(self.out_dir, protocol=self.protocol.name, strategy=cell.entry.name, seed=cell.seed,
                           order=self.protocol.folder_order(cell), accuracy_matrix=record.rows,
                           timings=record.timings, metrics=record.metrics, config=record.config,
                           inference=record.inference, files={"model.pt": record.model} if record.model else None,
                           robustness=record.robustness)
        _clear_checkpoints(self.folder(cell) / "checkpoints")
        (self.folder(cell) / "error.log").unlink(missing_ok=True)  # an earlier attempt's failure is over
        if self.log is not None:
            took = f" ({seconds:.1f} s)" if seconds is not None else ""
            self.log(f"[{self.protocol.cell_name(cell)}] final accuracy {record.metrics['final_accuracy']:.4f}, "
                     f"forgetting {record.metrics['average_forgetting']:.4f}{took}")

    def failed(self, cell: Cell, exc: BaseException, details: str) -> None:
        """Report a failed cell in one line and keep its traceback in the cell's error.log."""
        from cil.results import atomic_write_text

        line = f"{self.protocol.cell_name(cell)} ({_one_line(exc)})"
        self.failures.append(line)
        log_file = self.folder(cell) / "error.log"
        atomic_write_text(log_file, details)
        print(f"warning: cell {line} failed; details in {log_file}", file=sys.stderr, flush=True)

    def raise_failures(self, n_cells: int) -> None:
        if self.failures:
            rest = ("no cell finished" if len(self.failures) == n_cells
                    else "the other cells' results are written")
            raise GridFailure(f"{len(self.failures)} of {n_cells} cell{'s' if n_cells > 1 else ''} failed: "
                              f"{'; '.join(self.failures)}; {rest} (rerun to retry the failed ones)")


def submission_order(todo: list[Cell]) -> list[Cell]:
    """The costliest cells first (by the strategies' declared ``cost``), ties in protocol order.

    Ray starts tasks roughly in the order they are submitted; started last, one long cell
    (SLDA is a third or more of Split MNIST's baseline cell-minutes) would leave the other
    workers idle at the end. Longest first is Graham's (1969) classic list-scheduling rule."""
    from cil.strategies import registry

    return sorted(todo, key=lambda cell: -registry.get(cell.entry.strategy).cost)


class _LineBoard:
    """A Ray actor (no CPU of its own) that holds the cells' progress lines until the driver takes
    them: (cell label, fraction of the cell done, line)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, float, str]] = []

    def put(self, item: tuple[str, float, str]) -> None:
        self.items.append(item)

    def take(self) -> list[tuple[str, float, str]]:
        items, self.items = self.items, []
        return items

    def sync(self) -> None:
        """Returns once every earlier put of the caller is held (one caller's calls run in order)."""


def line_sender(board, label: str):
    """A cell's ``progress`` callback: posts each line to ``board`` without waiting. A task that
    waits on ``ray.get`` lends its CPUs back to Ray, which then starts another cell beside it,
    so a blocking post would run more cells at once than ``--workers``."""
    return lambda line, done: board.put.remote((label, done, line))


def _ray_cell(protocol: Protocol, cell: Cell, out_dir: str, probe: str, force: bool, verbose: bool,
              command: str, board=None):
    """A Ray task: one cell on a worker; checkpoints only where the run folder is shared. Each
    finished experience posts (cell label, fraction done, its line) to ``board`` (a
    ``_LineBoard`` the driver reads), if given."""
    import ray
    import torch

    from cil import results
    from cil.runner import _quiet_avalanche_deprecations, run_cell

    torch.set_num_threads(protocol.threads)
    dataset, stream = _cell_stream(protocol, cell.order)
    shared = (Path(out_dir) / probe).is_file()  # the driver's probe file is visible: same filesystem
    if protocol.loggers and not shared:  # their files would stay on this node: say so before training
        raise UserError(f"loggers ({', '.join(protocol.loggers)}) write into the run folder, which this Ray node "
                        "does not share with the driver; share the folder (e.g. a network filesystem) or "
                        "drop `loggers:`")
    folder = results.cell_dir(out_dir, cell.entry.name, cell.seed, protocol.folder_order(cell))
    with _quiet_avalanche_deprecations():
        record = run_cell(protocol, cell, dataset=dataset, stream=stream, log=print if verbose else None,
                          force=force, checkpoint_dir=folder / "checkpoints" if shared else None, command=command,
                          log_dir=folder / "logs", progress=line_sender(board, cell.label) if board else None)
    if board is not None:
        ray.get(board.sync.remote())  # the driver reads every line of the cell before its result
    return record


def _run_on_ray(protocol: Protocol, todo: list[Cell], writer: _Writer, *, force: bool, workers: int | None,
                address: str | None, verbose: bool) -> None:
    """Hand every cell to Ray, write each as it finishes; Ctrl-C cancels what is left. Without
    ``verbose``, the cells send one line per finished experience, which the driver prints (cells
    of VAR classifiers take hours; nothing else would show that they move)."""
    import logging

    import ray
    from ray.exceptions import RayError, RayTaskError

    progress = _Progress(total=len(todo), log=writer.log)  # before ray.init, which wraps sys.stderr
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address, log_to_driver=verbose, logging_level=logging.ERROR)
        else:
            ray.init(num_cpus=workers * protocol.threads, include_dashboard=False, log_to_driver=verbose,
                     logging_level=logging.ERROR, _node_ip_address="127.0.0.1")
    probe = f".grid-{uuid.uuid4().hex[:12]}"
    probe_path = writer.out_dir / probe
    probe_path.write_text("the run folder is shared with this node\n")
    pending: dict = {}
    board = None
    try:
        board = None if verbose else ray.remote(num_cpus=0)(_LineBoard).remote()  # takes no worker's CPU
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        wants_gpu = protocol.device.startswith("cuda") or (protocol.device == "auto" and has_gpus)
        capacity = ray.cluster_resources().get("CPU", 1)
        task = ray.remote(_ray_cell)
        command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
        for cell in submission_order(todo):
            cpus = float(cell.entry.resources.get("cpus", protocol.threads))
            gpus = float(cell.entry.resources.get("gpus", 1.0 if wants_gpu else 0.0))
            ref = task.options(num_cpus=cpus, num_gpus=gpus, max_retries=MAX_RETRIES,
                               name=f"cil cell {cell.label}").remote(
                protocol, cell, str(writer.out_dir), probe, force, verbose, command, board)
            pending[ref] = cell
        slots = max(1, int(capacity // max(protocol.threads, 1)))
        progress.update(running=min(slots, len(pending)))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            # a cell's lines are on the board before it returns: a finished cell's are all here
            for label, done, line in ray.get(board.take.remote()) if board is not None else []:
                progress.clear()
                progress.partial[label] = done
                if writer.log is not None:
                    writer.log(line)
            progress.update()  # the clock moves on
            for ref in ready:
                cell = pending.pop(ref)
                progress.partial.pop(cell.label, None)
                progress.clear()
                try:
                    record = ray.get(ref)
                except RayTaskError as exc:  # the cell raised
                    cause = exc.cause if exc.cause is not None else exc
                    if isinstance(cause, DiskFullError):
                        raise cause from None
                    writer.failed(cell, cause, str(exc))
                    progress.update(failed=1, running=min(slots, len(pending)))
                except RayError as exc:  # its worker died more often than retried
                    writer.failed(cell, exc, str(exc))
                    progress.update(failed=1, running=min(slots, len(pending)))
                else:
                    writer.write(record)
                    progress.update(done=1, running=min(slots, len(pending)))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        progress.close()
        probe_path.unlink(missing_ok=True)
        if board is not None:
            ray.kill(board)
        if started:
            ray.shutdown()
