"""Run a protocol: every (strategy, seed) cell, experience by experience, into result files.

For each cell: seed everything, build the strategy, then for each training experience train,
evaluate on the whole test stream (Avalanche's accuracy metric, per experience) and record
R[i][:], wall times and peak memory. Cells already finished are skipped unless ``force``.
Strategies that can save their state (``checkpoint_state``/``load_checkpoint_state``) get a
checkpoint per experience, and an interrupted cell resumes after the last one saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from typing import Any, Callable, Iterator

from cil.config import Protocol, StrategyEntry, resolved_dict
from cil.errors import UserError

_EXP_KEY = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/(?:Task\d+/)?Exp(\d+)$")


def resolve_device(name: str):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but no CUDA GPU is available; use device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (AGEM and replay buffers draw unseeded randomness otherwise)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


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


def experience_accuracies(results: dict, n_experiences: int) -> list[float]:
    """Per-experience test accuracies from an Avalanche eval() result dict (any key style)."""
    acc: dict[int, float] = {}
    for key, value in results.items():
        m = _EXP_KEY.match(key)
        if m:
            acc[int(m.group(1))] = float(value)
    missing = [j for j in range(n_experiences) if j not in acc]
    if missing:
        raise RuntimeError(f"evaluation produced no accuracy for experiences {missing}; keys: {sorted(results)[:5]}")
    return [acc[j] for j in range(n_experiences)]


def _make_plugins(*, task_incremental: bool) -> list:
    """Plugins every strategy gets (they act on evaluation)."""
    from avalanche.core import SupervisedPlugin

    plugins: list = []

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


def run_cell(protocol: Protocol, entry: StrategyEntry, seed: int, *, dataset, stream, out_dir: Path,
             device_name: str, log: Callable[[str], None] | None = print) -> dict:
    """Train and evaluate one strategy with one seed over the whole stream; write its files."""
    import torch
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from cil import results
    from cil.metrics import summarize
    from cil.strategies import registry
    from cil.strategies.registry import StrategyContext

    device = resolve_device(device_name)
    seed_everything(seed)
    label = f"{entry.name} seed {seed}"
    with warnings.catch_warnings():  # metrics are read from eval()'s return value, not from loggers
        warnings.simplefilter("ignore", UserWarning)
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[])
    t = entry.training
    ctx = StrategyContext(
        n_classes=dataset.n_classes, image_shape=dataset.image_shape, backbone=t.backbone,
        backbone_args=dict(t.backbone_args), optimizer=t.optimizer, lr=t.lr, weight_decay=t.weight_decay,
        momentum=t.momentum, train_mb_size=t.train_mb_size, eval_mb_size=t.eval_mb_size, train_epochs=t.epochs,
        device=device, seed=seed, evaluator=evaluator,
        plugins=tuple(_make_plugins(task_incremental=stream.task_incremental)),
        epoch_plugins=tuple(_make_epoch_plugins(log=log, label=label)),
        progress=log is not None, name=entry.name,
    )
    strategy = registry.build(entry.strategy, ctx, entry.params)
    cell = results.cell_dir(out_dir, entry.name, seed)
    ckpt_dir = cell / "checkpoints"
    can_ckpt = hasattr(strategy, "checkpoint_state") and hasattr(strategy, "load_checkpoint_state")

    T = stream.n_experiences
    rows: list[list[float]] = []
    timings: list[dict] = []
    start_exp = 0
    settings = _cell_settings(protocol, entry)
    if can_ckpt:
        start_exp, rows, timings = _resume(strategy, ckpt_dir, T, log, label, settings)
    memory = _PeakMemory(device)
    train_stream, test_stream = stream.benchmark.train_stream, stream.benchmark.test_stream
    for i in range(start_exp, T):
        exp = train_stream[i]
        memory.reset()
        t0 = time.perf_counter()
        strategy.train(exp)
        t1 = time.perf_counter()
        accs = experience_accuracies(strategy.eval(test_stream), T)
        t2 = time.perf_counter()
        rows.append(accs)
        timings.append({"train_exp": i, "train_seconds": t1 - t0, "eval_seconds": t2 - t1,
                        "peak_memory_mb": memory.read()})
        if log is not None:
            seen = sum(accs[: i + 1]) / (i + 1)
            log(f"[{label}] experience {i + 1}/{T} classes {stream.classes_per_experience[i]}: "
                f"train {t1 - t0:.1f} s, eval {t2 - t1:.1f} s, accuracy on seen {seen:.3f}")
        if can_ckpt:
            _save_checkpoint(strategy, ckpt_dir, i, rows, timings, settings)

    inference = strategy.inference_report(test_stream) if hasattr(strategy, "inference_report") else None
    metrics = summarize(rows)
    metrics.update({
        "protocol": protocol.name, "strategy": entry.name, "seed": seed, "n_experiences": T,
        "train_seconds": sum(r["train_seconds"] for r in timings),
        "eval_seconds": sum(r["eval_seconds"] for r in timings),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in timings),
        "class_order": stream.class_order,
    })
    config = resolved_dict(dataclasses.replace(protocol, strategies=[entry]))
    config["run"] = {
        "strategy": entry.name, "seed": seed, "class_order_seed": protocol.stream.class_order_seed,
        "class_order": stream.class_order, "classes_per_experience": stream.classes_per_experience,
        "device": str(device), "threads": torch.get_num_threads(), "versions": library_versions(),
        "hostname": socket.gethostname(), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        config["run"]["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(strategy, "final_model"):  # e.g. the VAR classifier, for `cil explain RUN_DIR`
        strategy.final_model().save(cell / "model.pt")  # before metrics.json marks the cell done
    results.write_cell(out_dir, protocol=protocol.name, strategy=entry.name, seed=seed, accuracy_matrix=rows,
                       timings=timings, metrics=metrics, config=config, inference=inference)
    if can_ckpt:
        _clear_checkpoints(ckpt_dir)
    return metrics


def _cell_settings(protocol: Protocol, entry: StrategyEntry) -> str:
    """Everything that decides a cell's numbers, as text: a checkpoint made under other
    settings must not be resumed (threads, seeds list, data root and description aside)."""
    d = resolved_dict(dataclasses.replace(protocol, strategies=[entry]))
    for key in ("description", "data_root", "seeds", "threads"):
        d.pop(key, None)
    return json.dumps(d, sort_keys=True, default=str)


def _save_checkpoint(strategy: Any, ckpt_dir: Path, exp: int, rows: list, timings: list, settings: str) -> None:
    import numpy as np
    import torch

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "exp": exp, "rows": rows, "timings": timings, "settings": settings, "strategy": strategy.checkpoint_state(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False),
                "python": random.getstate()},
    }
    tmp = ckpt_dir / f".exp{exp:03d}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, ckpt_dir / f"exp{exp:03d}.pt")


def _resume(strategy: Any, ckpt_dir: Path, T: int, log, label: str, settings: str) -> tuple[int, list, list]:
    import numpy as np
    import torch

    files = sorted(ckpt_dir.glob("exp*.pt")) if ckpt_dir.is_dir() else []
    if not files:
        return 0, [], []
    state = torch.load(files[-1], weights_only=False, map_location="cpu")  # our own file: RNG states need pickle
    if state.get("settings") != settings:
        if log is not None:
            log(f"[{label}] {ckpt_dir} holds checkpoints made with other settings; starting the cell over")
        _clear_checkpoints(ckpt_dir)
        return 0, [], []
    strategy.load_checkpoint_state(state["strategy"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    exp = int(state["exp"])
    if log is not None:
        log(f"[{label}] resuming after experience {exp + 1}/{T} from {files[-1]}")
    return exp + 1, list(state["rows"]), list(state["timings"])


def _clear_checkpoints(ckpt_dir: Path) -> None:
    if ckpt_dir.is_dir():
        for f in ckpt_dir.glob("*.pt"):
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


def run_protocol(protocol: Protocol, *, out_dir: Path, force: bool = False,
                 log: Callable[[str], None] | None = print) -> Path:
    """Run every (strategy, seed) cell not yet finished; rewrite summary.csv; return out_dir."""
    with _quiet_avalanche_deprecations():
        return _run_protocol(protocol, out_dir=out_dir, force=force, log=log)


def _run_protocol(protocol: Protocol, *, out_dir: Path, force: bool, log: Callable[[str], None] | None) -> Path:
    import torch

    from cil import results
    from cil.streams import protocol_stream

    torch.set_num_threads(protocol.threads)
    resolve_device(protocol.device)  # fail before any work when CUDA is asked for and absent
    dataset, stream = protocol_stream(protocol)
    out_dir.mkdir(parents=True, exist_ok=True)
    if log is not None:
        log(f"protocol {protocol.name}: dataset {protocol.dataset} ({dataset.n_classes} classes, "
            f"{len(dataset.y_train)} train / {len(dataset.y_test)} test), {stream.n_experiences} experiences, "
            f"class order {stream.class_order}; results in {out_dir}")
    for seed in protocol.seeds:
        for entry in protocol.strategies:
            if not force and results.cell_done(out_dir, entry.name, seed):
                if log is not None:
                    log(f"[{entry.name} seed {seed}] already done, skipping (use --force to rerun)")
                continue
            t0 = time.perf_counter()
            m = run_cell(protocol, entry, seed, dataset=dataset, stream=stream, out_dir=out_dir,
                         device_name=protocol.device, log=log)
            if log is not None:
                log(f"[{entry.name} seed {seed}] final accuracy {m['final_accuracy']:.4f}, forgetting "
                    f"{m['average_forgetting']:.4f} ({time.perf_counter() - t0:.1f} s)")
    results.write_summary(out_dir)
    return out_dir
