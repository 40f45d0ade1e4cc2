"""One cell of a protocol: (strategy, training seed, class order) -> its records.

Seed everything, build the strategy, then for each training experience train, evaluate on the
whole test stream (Avalanche's accuracy metric, per experience) and record R[i][:], wall times
and peak memory. Strategies that declare checkpoints (``cil.strategies.base.capabilities``) get
a checkpoint per experience, and an interrupted cell resumes after the last one saved. Writing
result files is the grid driver's job (``cil.grid``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import random
import re
import resource
import socket
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from cil.config import Cell, Protocol, TrainingConfig, resolved_dict
from cil.errors import UserError

if TYPE_CHECKING:
    from cil.strategies.registry import StrategyContext

_EXP_KEY = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/(?:Task\d+/)?Exp(\d+)$")


def protocol_device(name: str):
    """The protocol's ``device`` as a torch device (the model library's resolver; a missing GPU
    is a one-line error)."""
    from varc.model import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        raise UserError(f"device: {exc}") from None


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (AGEM and replay buffers draw unseeded randomness otherwise)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@functools.lru_cache(maxsize=None)
def source_state() -> dict[str, Any]:
    """The project's version and, in a git checkout, its commit and whether the code (cil/,
    varc/, benchmarks/, packaging) differs from it: which code made a result."""
    import subprocess

    from cil import __version__

    root = Path(__file__).resolve().parent.parent
    state: dict[str, Any] = {"version": __version__, "commit": None, "dirty": None}
    if not (root / ".git").exists():
        return state
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "cil", "varc", "benchmarks",
                                  "setup.cfg", "pyproject.toml"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return state
    if head.returncode == 0:
        state["commit"] = head.stdout.strip()
        state["dirty"] = bool(changes.stdout.strip()) if changes.returncode == 0 else None
    return state


def strategy_provenance(module: str) -> dict[str, Any]:
    """Which module registered a strategy, and which installed distribution (and version) it
    came from: the suite itself or a plugin package."""
    from importlib.metadata import packages_distributions, version

    top = module.split(".")[0]
    dists = packages_distributions().get(top, [])
    dist = dists[0] if dists else None
    return {"module": module, "distribution": dist, "version": version(dist) if dist else None}


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("varc-cil", "torch", "avalanche-lib", "numpy", "pandas", "seaborn", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


class _PeakMemory:
    """Peak resident memory between ``reset`` and ``read`` (Linux VmHWM; CUDA peak on a GPU)."""

    def __init__(self, device) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass

    def read(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def experience_accuracies(results: dict, n_experiences: int, *, name: str = "the strategy") -> list[float]:
    """Per-experience test accuracies from an Avalanche eval() result dict (any key style)."""
    if not isinstance(results, dict) or not all(isinstance(k, str) for k in results):
        raise UserError(f"{name}: eval(stream) returned {type(results).__name__}; expected Avalanche's dict of "
                        "metric names to values (keys such as 'Top1_Acc_Exp/eval_phase/test_stream/Exp000'): "
                        "return what the template's eval() returns")
    acc: dict[int, float] = {}
    for key, value in results.items():
        m = _EXP_KEY.match(key)
        if m:
            acc[int(m.group(1))] = float(value)
    missing = [j for j in range(n_experiences) if j not in acc]
    if missing:
        raise UserError(f"{name}: evaluation produced no accuracy for experiences {missing} (keys: "
                        f"{sorted(results)[:5]}); evaluate with ctx.evaluator, as ctx.template_kwargs does")
    return [acc[j] for j in range(n_experiences)]


def _make_plugins(*, task_incremental: bool) -> list:
    """Plugins every strategy gets (they act on evaluation). The first does nothing: it is always
    there, so a template that drops ``ctx.plugins`` is refused in every protocol, not only in a
    task-incremental one where dropping the mask would silently report the wrong accuracy."""
    from avalanche.core import SupervisedPlugin

    class RunnerPlugins(SupervisedPlugin):
        """Marks the runner's plugins as applied (no effect on training or evaluation)."""

    plugins: list = [RunnerPlugins()]

    if task_incremental:
        class TaskMask(SupervisedPlugin):
            """Task-incremental evaluation: scores only the classes of the evaluated experience."""

            def after_eval_forward(self, strategy, **kwargs):
                import torch

                classes = list(strategy.experience.classes_in_this_experience)
                out = strategy.mb_output
                mask = torch.full_like(out, float("-inf"))
                mask[:, classes] = 0.0
                strategy.mb_output = out + mask

        plugins.append(TaskMask())
    return plugins


def _make_epoch_plugins(*, log: Callable[[str], None] | None, label: str) -> list:
    """Plugins that watch Avalanche's SGD training loop (only strategies that run it get them)."""
    from avalanche.core import SupervisedPlugin

    plugins: list = []
    if log is not None:
        class EpochProgress(SupervisedPlugin):
            """A line per training epoch (at most one per 5 s): epoch, mean loss, seconds."""

            last_print = time.perf_counter()

            def before_training_epoch(self, strategy, **kwargs):
                self.t0, self.loss, self.n = time.perf_counter(), 0.0, 0

            def after_training_iteration(self, strategy, **kwargs):
                self.loss += float(strategy.loss.detach())
                self.n += 1

            def after_training_epoch(self, strategy, **kwargs):
                epochs = strategy.train_epochs
                done = strategy.clock.train_exp_epochs + 1
                now = time.perf_counter()
                if epochs > 1 and (now - self.last_print >= 5.0 or done == epochs and now - self.t0 >= 5.0):
                    self.last_print = now
                    log(f"  [{label}] epoch {done}/{epochs}  loss {self.loss / max(self.n, 1):.4f}  "
                        f"({time.perf_counter() - self.t0:.1f} s)")

        plugins.append(EpochProgress())
    return plugins


def make_context(dataset, training: TrainingConfig, *, device: Any = "cpu", seed: int = 0,
                 task_incremental: bool = False, name: str = "", log: Callable[[str], None] | None = None,
                 label: str = "", loggers: list | None = None) -> "StrategyContext":
    """The context a builder gets: the dataset's shape, the entry's training settings, the
    evaluation plugin whose metrics the runner reads (and, given ``loggers``, streams per-epoch
    training metrics to them too), and the runner's plugins (task-incremental masking; per-epoch
    progress lines for strategies that run Avalanche's SGD loop)."""
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from cil.strategies.registry import StrategyContext

    metrics = [accuracy_metrics(experience=True, stream=True)]
    if loggers:
        metrics += [accuracy_metrics(epoch=True), loss_metrics(epoch=True, experience=True)]
    with warnings.catch_warnings():  # metrics are read from eval()'s return value, not from loggers
        warnings.simplefilter("ignore", UserWarning)
        evaluator = EvaluationPlugin(*metrics, loggers=list(loggers or []))
    return StrategyContext(n_classes=dataset.n_classes, image_shape=dataset.image_shape, training=training,
                           device=device, seed=seed, evaluator=evaluator,
                           plugins=tuple(_make_plugins(task_incremental=task_incremental)),
                           epoch_plugins=tuple(_make_epoch_plugins(log=log, label=label or name)),
                           progress=log is not None, name=name)


@dataclasses.dataclass
class CellRecord:
    """Everything a finished cell writes, as data: the driver of the grid is its only writer."""

    cell: Cell
    rows: list[list[float]]
    timings: list[dict]
    metrics: dict
    config: dict
    inference: list[dict] | None
    model: bytes | None  # the final model's file (model.pt), for strategies that save one
    robustness: list[dict] | None = None  # accuracy under corruptions (protocols with `robustness:`)


_CORRUPTED: dict[tuple, list] = {}


def _corrupted_streams(protocol: Protocol, cell: Cell, dataset) -> list:
    """The corrupted test streams of the cell's class order, built once per process."""
    from cil.streams import corrupted_streams

    narrowed = protocol.for_cell(cell)
    key = (protocol.dataset, protocol.data_root, json.dumps(resolved_dict(narrowed)["stream"], default=str),
           json.dumps(dataclasses.asdict(protocol.robustness)))
    if key not in _CORRUPTED:
        _CORRUPTED[key] = corrupted_streams(narrowed, dataset)
    return _CORRUPTED[key]


def evaluate_robustness(strategy: Any, corrupted: list, train_exp: int, name: str) -> list[dict]:
    """Accuracy on the classes seen so far (experiences 0..train_exp), per corruption and
    severity, through the strategy's own ``eval`` (its plugins and prediction rule included)."""
    rows = []
    for corruption, severity, stream in corrupted:
        tests = stream.benchmark.test_stream
        accs = experience_accuracies(strategy.eval(tests), stream.n_experiences, name=name)
        sizes = [len(tests[j].dataset) for j in range(train_exp + 1)]
        seen = sum(a * n for a, n in zip(accs, sizes)) / sum(sizes)
        rows.append({"train_exp": train_exp, "corruption": corruption, "severity": severity, "accuracy": seen})
    return rows


def run_cell(protocol: Protocol, cell: Cell, *, dataset, stream, checkpoint_dir: Path | None,
             log: Callable[[str], None] | None = print, force: bool = False, command: str = "",
             log_dir: Path | None = None, progress: Callable[[str, float], None] | None = None) -> CellRecord:
    """Train and evaluate one cell over the whole stream; return its records (no result files).

    ``checkpoint_dir``: where a strategy that can save its state checkpoints every experience
    and resumes from (None: no checkpoints, e.g. a cluster node that does not share the run
    folder). ``protocol`` is the whole protocol; ``stream`` is built with the cell's class order.
    ``log`` takes every line (the strategy's epochs too); ``progress``, where given, takes the
    one line per finished experience instead, with the fraction of the cell done (a parallel
    grid's driver prints those lines and estimates the time left from the fractions).
    """
    import torch

    from cil.metrics import summarize
    from cil.strategies import registry
    from cil.strategies.base import capabilities
    from cil.streams import resolve_class_order

    entry, seed = cell.entry, cell.seed
    wanted = resolve_class_order(len(stream.class_order), cell.order.order, cell.order.seed)
    if list(stream.class_order) != wanted:  # a cell labelled with one order must never train on another
        raise RuntimeError(f"cell {cell.label} was handed a stream in class order {stream.class_order}, "
                           f"not its own {wanted}")
    device = protocol_device(protocol.device)
    seed_everything(seed)
    label = protocol.cell_name(cell)
    loggers = []
    if protocol.loggers and log_dir is not None:
        from cil.loggers import make_loggers

        loggers = make_loggers(protocol.loggers, log_dir, run_name=f"{protocol.name} {label}",
                               config=resolved_dict(protocol.for_cell(cell)))
    ctx = make_context(dataset, entry.training, device=device, seed=seed, task_incremental=stream.task_incremental,
                       name=entry.name, log=log, label=label, loggers=loggers)
    strategy = registry.build(entry.strategy, ctx, entry.params)
    caps = capabilities(strategy)
    can_ckpt = checkpoint_dir is not None and caps.checkpoints

    T = stream.n_experiences
    rows: list[list[float]] = []
    timings: list[dict] = []
    robust: list[dict] = []
    corrupted = _corrupted_streams(protocol, cell, dataset) if protocol.robustness is not None else []
    robust_exps = set() if not corrupted else set(range(T)) if protocol.robustness.after == "every" else {T - 1}
    start_exp = 0
    settings = json.dumps(cell_settings(protocol, cell), sort_keys=True, default=str)
    if force and checkpoint_dir is not None:
        _clear_checkpoints(checkpoint_dir)  # --force never reads old checkpoints
    elif can_ckpt:
        resumed = _resume(strategy, checkpoint_dir, T, log, label, settings, strategy_defaults(protocol))
        if resumed is None:  # a checkpoint was refused after it touched the strategy: build it afresh
            seed_everything(seed)
            strategy = registry.build(entry.strategy, ctx, entry.params)
        else:
            start_exp, rows, timings, robust = resumed
    memory = _PeakMemory(device)
    train_stream, test_stream = stream.benchmark.train_stream, stream.benchmark.test_stream
    for i in range(start_exp, T):
        exp = train_stream[i]
        memory.reset()
        t0 = time.perf_counter()
        strategy.train(exp)
        t1 = time.perf_counter()
        accs = experience_accuracies(strategy.eval(test_stream), T, name=f"strategy {entry.name!r}")
        t2 = time.perf_counter()
        rows.append(accs)
        timing = {"train_exp": i, "train_seconds": t1 - t0, "eval_seconds": t2 - t1, "peak_memory_mb": memory.read()}
        if i in robust_exps:  # timed apart: the clean evaluation's time is the yardstick
            robust += evaluate_robustness(strategy, corrupted, i, name=f"strategy {entry.name!r}")
            timing["robustness_seconds"] = time.perf_counter() - t2
        timings.append(timing)
        seen = sum(accs[: i + 1]) / (i + 1)
        line = (f"[{label}] experience {i + 1}/{T} classes {stream.classes_per_experience[i]}: "
                f"train {t1 - t0:.1f} s, eval {t2 - t1:.1f} s, accuracy on seen {seen:.3f}")
        if progress is not None:
            progress(line, (i + 1) / T)
        elif log is not None:
            log(line)
        if can_ckpt:
            _save_checkpoint(strategy, checkpoint_dir, i, rows, timings, settings, robust)

    inference = strategy.inference_report(test_stream) if caps.inference else None
    metrics = summarize(rows)
    metrics.update({
        "protocol": protocol.name, "strategy": entry.name, "seed": seed, "order": cell.order.label,
        "class_order_seed": cell.order.seed, "n_experiences": T,
        "train_seconds": sum(r["train_seconds"] for r in timings),
        "eval_seconds": sum(r["eval_seconds"] for r in timings),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in timings),
        "class_order": stream.class_order,
    })
    if corrupted:
        final = [r["accuracy"] for r in robust if r["train_exp"] == T - 1 and r["severity"] > 0]
        metrics["robust_accuracy"] = sum(final) / len(final)  # mean over corruptions and severities, final model
        metrics["robust_clean_accuracy"] = next(r["accuracy"] for r in robust
                                                if r["train_exp"] == T - 1 and r["severity"] == 0)
        metrics["robustness_seconds"] = sum(t.get("robustness_seconds", 0.0) for t in timings)
    config = resolved_dict(protocol.for_cell(cell))
    config["run"] = {
        "strategy": entry.name, "seed": seed, "order": cell.order.label, "class_order_seed": cell.order.seed,
        "class_order": stream.class_order, "classes_per_experience": stream.classes_per_experience,
        "device": str(device), "threads": torch.get_num_threads(), "versions": library_versions(),
        "code": source_state(), "strategy_source": strategy_provenance(registry.get(entry.strategy).module),
        "hostname": socket.gethostname(), "command": command or " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        config["run"]["gpu"] = torch.cuda.get_device_name(device)
    # e.g. the VAR classifier's model, for `cil explain RUN_DIR`
    model = strategy.model_bytes() if caps.model else None
    for logger in loggers:
        if hasattr(logger, "close"):
            logger.close()
    return CellRecord(cell=cell, rows=rows, timings=timings, metrics=metrics, config=config, inference=inference,
                      model=model, robustness=robust if corrupted else None)


# Settings that do not change a cell's numbers (the grid's axes are the cell's own seed and order).
IGNORED_SETTINGS = ("description", "data_root", "seeds", "threads", "pairing")


def cell_settings(protocol: Protocol, cell: Cell) -> dict:
    """Everything that decides a cell's numbers, as plain data: a checkpoint or a finished cell
    made under other settings must not be reused (threads, the grid's seeds and orders, the
    data root and the description aside)."""
    d = resolved_dict(protocol.for_cell(cell))
    for key in IGNORED_SETTINGS:
        d.pop(key, None)
    d["stream"].pop("class_orders", None)
    return d


def strategy_defaults(protocol: Protocol) -> dict[str, Any]:
    """``strategies.NAME.param`` -> the parameter's registered default, for every strategy of the
    protocol: a cell finished before a parameter existed holds no value for it, and the default is
    what the code ran then (a new parameter must default to the old behaviour)."""
    from cil.strategies import registry

    return {f"strategies.{e.name}.{p.name}": p.default
            for e in protocol.strategies for p in registry.get(e.strategy).params.values()}


def settings_differences(stored: dict, new: dict, *, defaults: dict[str, Any] | None = None) -> list[str]:
    """``key.path: old -> new`` for every setting that differs between two resolved configs.
    A key that ``stored`` lacks is no difference when ``new`` holds its entry in ``defaults``
    (flat key paths, as from :func:`strategy_defaults`)."""
    import yaml

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out if out or not prefix else {prefix[:-1]: {}}
        return {prefix[:-1]: d}

    def plain(d: dict) -> dict:  # what config.yaml holds, read back: tuples as lists, floats exact
        return yaml.safe_load(yaml.safe_dump(json.loads(json.dumps(d, default=str))))

    stored = {k: v for k, v in stored.items() if k not in IGNORED_SETTINGS + ("run",)}
    if isinstance(stored.get("stream"), dict):
        stored["stream"] = {k: v for k, v in stored["stream"].items() if k != "class_orders"}
    a, b = flat(_comparable(plain(stored))), flat(_comparable(plain(new)))
    for k, v in (flat(plain(defaults), "") if defaults else {}).items():
        if k not in a and k in b and b[k] == v:
            a[k] = v
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "(absent)") != b.get(k, "(absent)")]


def _comparable(d: dict) -> dict:
    """A resolved config in the form two cells are compared in: each strategy with its effective
    training settings (the shared block and its own overrides) limited to those its strategy
    reads (``uses_training``); without loggers and resources, which never change a number."""
    from cil.config import TRAINING_OVERRIDES
    from cil.strategies import registry

    d = dict(d)
    shared = d.pop("training", None) or {}
    d.pop("loggers", None)
    strategies = {}
    for name, entry in (d.get("strategies") or {}).items():
        if not isinstance(entry, dict):
            strategies[name] = entry
            continue
        entry = {k: v for k, v in entry.items() if k != "resources"}
        own = {k: entry.pop(k) for k in TRAINING_OVERRIDES if k in entry}
        try:
            uses = registry.get(str(entry.get("strategy", name))).uses_training
        except UserError:  # a strategy no longer registered: compare everything
            uses = TRAINING_OVERRIDES
        entry["training"] = {k: own.get(k, shared.get(k)) for k in uses if k in own or k in shared}
        strategies[name] = entry
    if "strategies" in d:
        d["strategies"] = strategies
    return d


def _warn(message: str) -> None:
    """A one-line warning that reaches the user even with --quiet."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _rng_state() -> dict:
    """Python, numpy and torch generator states as tensors and plain types (no pickle needed)."""
    import numpy as np
    import torch

    np_state = np.random.get_state(legacy=False)
    version, py_state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])},
            "python": {"version": version, "state": list(py_state), "gauss": gauss}}


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]}})
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _save_checkpoint(strategy: Any, ckpt_dir: Path, exp: int, rows: list, timings: list, settings: str,
                     robust: list) -> None:
    """Tensors and plain types only, so that loading needs no pickle (``weights_only=True``)."""
    import io

    import torch

    from cil.results import atomic_write_bytes

    state = {"exp": exp, "rows": rows, "timings": timings, "settings": settings, "robustness": robust,
             "strategy": strategy.checkpoint_state(), "rng": _rng_state()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(ckpt_dir / f"exp{exp:03d}.pt", buffer.getvalue())


def _resume(strategy: Any, ckpt_dir: Path, T: int, log, label: str, settings: str, defaults: dict[str, Any]
            ) -> tuple[int, list, list, list] | None:
    """Load the newest checkpoint into ``strategy``: (next experience, rows, timings, robustness rows).

    A checkpoint that cannot be read as tensors and plain types (damaged, or holding anything
    that would need unpickling code), or that was made under other settings, is reported in
    one line and removed, and the cell starts over: (0, [], [], []), or None when the strategy
    had already taken part of it and must be built afresh. Settings are compared as for a
    finished cell (:func:`settings_differences`): a parameter added to the code since, at its
    default, is no difference.
    """
    import torch

    files = sorted(ckpt_dir.glob("exp*.pt")) if ckpt_dir.is_dir() else []
    if not files:
        return 0, [], [], []
    try:
        state = torch.load(files[-1], weights_only=True, map_location="cpu")
        exp, rows, timings = int(state["exp"]), list(state["rows"]), list(state["timings"])
        robust = list(state.get("robustness", []))
        if not (len(rows) == len(timings) == exp + 1 <= T):
            raise ValueError(f"holds {len(rows)} rows for experience {exp + 1} of {T}")
        same = not settings_differences(json.loads(state["settings"]), json.loads(settings), defaults=defaults)
    except Exception as exc:  # noqa: BLE001 (any defect of the file means: do not trust it)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        _warn(f"[{label}] cannot use checkpoint {files[-1]} ({type(exc).__name__}: {first}); starting the cell over")
        _clear_checkpoints(ckpt_dir)
        return 0, [], [], []
    if not same:
        _warn(f"[{label}] {ckpt_dir} holds checkpoints made with other settings; starting the cell over")
        _clear_checkpoints(ckpt_dir)
        return 0, [], [], []
    try:
        strategy.load_checkpoint_state(state["strategy"])
        _set_rng_state(state["rng"])
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        _warn(f"[{label}] checkpoint {files[-1]} does not fit this strategy ({type(exc).__name__}: {first}); "
              "starting the cell over")
        _clear_checkpoints(ckpt_dir)
        return None
    if log is not None:
        log(f"[{label}] resuming after experience {exp + 1}/{T} from {files[-1]}")
    return exp + 1, rows, timings, robust


def _clear_checkpoints(ckpt_dir: Path) -> None:
    if ckpt_dir.is_dir():
        for f in ckpt_dir.iterdir():
            if f.is_file():
                f.unlink()
        try:
            ckpt_dir.rmdir()
        except OSError:
            pass


@contextlib.contextmanager
def _quiet_avalanche_deprecations() -> Iterator[None]:
    """Drop the DeprecationWarnings Avalanche 0.6 raises about its own internals on every
    experience (not actionable by a user). Its ``deprecated`` decorator resets the warning
    filters on each call, so they are dropped where they are shown instead."""
    show = warnings.showwarning

    def filtered(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, DeprecationWarning) and f"{os.sep}avalanche{os.sep}" in str(filename):
            return
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = filtered
    try:
        yield
    finally:
        warnings.showwarning = show
