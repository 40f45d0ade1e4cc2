"""Result files of a run: the one place that knows their layout (see docs/results_format.md).

A run folder holds one *cell* per (strategy, seed), ``<strategy>/seed<k>/``, and a
``summary.csv`` rebuilt from every cell. Inside a cell ``metrics.json`` is written last, so a
cell with a readable ``metrics.json`` is complete and a rerun may skip it; a cell without one
is incomplete (an interrupted run) and readers skip it with an :class:`IncompleteCellWarning`.

Readers validate what they load and turn every defect into a one-line
:class:`~cil.errors.UserError` that names the file, so plots and reports can trust the frames.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from cil.errors import UserError, os_error

if TYPE_CHECKING:  # pandas is imported lazily: importing cil.results stays cheap
    import pandas as pd

ACCURACY_FILE = "accuracy_matrix.csv"
TIMINGS_FILE = "timings.csv"
INFERENCE_FILE = "inference.csv"
ROBUSTNESS_FILE = "robustness.csv"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.csv"

KEY_COLUMNS = ["protocol", "strategy", "seed"]
ACCURACY_COLUMNS = KEY_COLUMNS + ["train_exp", "eval_exp", "accuracy"]
TIMING_COLUMNS = KEY_COLUMNS + ["train_exp", "train_seconds", "eval_seconds", "peak_memory_mb"]
INFERENCE_COLUMNS = KEY_COLUMNS + ["setting", "accuracy", "images_per_second",
                                   "token_forwards_per_image", "seconds_per_image", "classes"]
ROBUSTNESS_COLUMNS = KEY_COLUMNS + ["train_exp", "corruption", "severity", "accuracy"]
METRIC_NAMES = ["final_accuracy", "average_incremental_accuracy", "average_forgetting", "bwt"]
COST_NAMES = ["train_seconds", "eval_seconds", "peak_memory_mb"]
ROBUSTNESS_NAMES = ["robust_accuracy", "robustness_seconds"]  # empty for cells without `robustness:`
SUMMARY_COLUMNS = KEY_COLUMNS + ["order", "n_experiences"] + METRIC_NAMES + COST_NAMES + ROBUSTNESS_NAMES

_SEED_DIR = re.compile(r"^seed(-?\d+)(?:_([A-Za-z0-9]+))?$")
_BAD_NAME = re.compile(r"[/\\\x00]")


class IncompleteCellWarning(UserWarning):
    """A cell folder without ``metrics.json`` (its run was interrupted); readers skip it."""


# --------------------------------------------------------------------------- writing


def _atomic_write(path: Path, data: bytes) -> None:
    from varc.atomic import atomic_write_bytes as write

    try:
        write(path, data)
    except OSError as exc:
        raise os_error(exc, path=exc.filename or path, size=len(data)) from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so readers see the old file or the new one, never half."""
    _atomic_write(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Binary twin of :func:`atomic_write_text` (figures)."""
    _atomic_write(path, data)


def cell_dir(out_dir: Path, strategy: str, seed: int, order: str | None = None) -> Path:
    """``out_dir/<strategy>/seed<k>``, or ``seed<k>_<order>`` (see ``Protocol.folder_order``):
    the folder of one (strategy, seed, class order) cell."""
    if not strategy or strategy in (".", "..") or _BAD_NAME.search(strategy):
        raise UserError(f"strategy name {strategy!r} cannot name a folder; use letters, digits, '_' or '-'")
    return Path(out_dir) / strategy / (f"seed{int(seed)}" + (f"_{order}" if order else ""))


def cell_done(out_dir: Path, strategy: str, seed: int, order: str | None = None) -> bool:
    """True when the cell's ``metrics.json`` (written last) exists and parses as a JSON object."""
    path = cell_dir(out_dir, strategy, seed, order) / METRICS_FILE
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def read_cell_config(folder: Path) -> dict:
    """A cell's resolved settings (``config.yaml``), validated: one line naming the file if not."""
    return _read_config(Path(folder) / CONFIG_FILE)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays, tuples and paths as plain YAML/JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalar or array
        return _plain(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns).to_csv(index=False, lineterminator="\n")


def write_cell(out_dir: Path, *, protocol: str, strategy: str, seed: int,
               accuracy_matrix: Sequence[Sequence[float]], timings: list[dict], metrics: dict,
               config: dict, inference: list[dict] | None = None, order: str | None = None,
               files: dict[str, bytes] | None = None, robustness: list[dict] | None = None) -> Path:
    """Write every file of one cell, ``metrics.json`` last, each atomically; return the cell folder.

    ``order`` names the cell's class order in its folder (runs with several class orders);
    ``files`` are extra files of the cell (the VAR classifier's ``model.pt``), written before
    ``metrics.json`` marks the cell complete.

    ``metrics`` may hold just what the runner measured: missing stream metrics are computed
    from ``accuracy_matrix`` with :mod:`cil.metrics`, time totals and peak memory from
    ``timings``, ``class_order`` from ``config['run']``.
    """
    from cil import metrics as M

    seed = int(seed)
    R = [[float(v) for v in row] for row in accuracy_matrix]
    T = len(R)
    if T == 0 or any(len(row) != T for row in R):
        raise ValueError(f"accuracy_matrix must be square T x T, got rows of lengths {[len(r) for r in R]}")
    if any(not (0.0 <= v <= 1.0) for row in R for v in row):
        raise ValueError("accuracy_matrix values must lie in [0, 1]")
    key = {"protocol": protocol, "strategy": strategy, "seed": seed}
    folder = cell_dir(out_dir, strategy, seed, order)
    folder.mkdir(parents=True, exist_ok=True)
    # A rewrite starts by removing the completion mark, so a crash halfway leaves "incomplete".
    (folder / METRICS_FILE).unlink(missing_ok=True)

    acc_rows = [{**key, "train_exp": i, "eval_exp": j, "accuracy": R[i][j]}
                for i in range(T) for j in range(T)]
    atomic_write_text(folder / ACCURACY_FILE, _csv_text(acc_rows, ACCURACY_COLUMNS))

    time_rows = []
    for row in timings:
        missing = [c for c in TIMING_COLUMNS[3:] if c not in row]
        if missing:
            raise ValueError(f"timings row {row!r} lacks {', '.join(missing)}")
        time_rows.append({**key, **{c: row[c] for c in TIMING_COLUMNS[3:]}})
    atomic_write_text(folder / TIMINGS_FILE, _csv_text(time_rows, TIMING_COLUMNS))

    import yaml

    atomic_write_text(folder / CONFIG_FILE,
                      yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True))

    inf_path = folder / INFERENCE_FILE
    if inference:
        inf_rows = []
        for row in inference:
            if "setting" not in row or "accuracy" not in row:
                raise ValueError(f"inference row {row!r} needs at least 'setting' and 'accuracy'")
            inf_rows.append({**key, **{c: row.get(c) for c in INFERENCE_COLUMNS[3:]}})
        atomic_write_text(inf_path, _csv_text(inf_rows, INFERENCE_COLUMNS))
    else:
        inf_path.unlink(missing_ok=True)

    rob_path = folder / ROBUSTNESS_FILE
    if robustness:
        rob_rows = [{**key, **{c: row[c] for c in ROBUSTNESS_COLUMNS[3:]}} for row in robustness]
        atomic_write_text(rob_path, _csv_text(rob_rows, ROBUSTNESS_COLUMNS))
    else:
        rob_path.unlink(missing_ok=True)

    for name, data in (files or {}).items():
        atomic_write_bytes(folder / name, data)

    out = dict(_plain(metrics))
    out.update(key)
    computed = M.summarize(R)
    for name in METRIC_NAMES + ["per_experience_final"]:
        out.setdefault(name, computed[name])
    out.setdefault("train_seconds", float(sum(float(r["train_seconds"]) for r in timings)))
    out.setdefault("eval_seconds", float(sum(float(r["eval_seconds"]) for r in timings)))
    mems = [float(r["peak_memory_mb"]) for r in timings if r["peak_memory_mb"] is not None]
    out.setdefault("peak_memory_mb", max(mems) if mems else None)
    run_section = config.get("run", {}) if isinstance(config, dict) else {}
    out.setdefault("class_order", _plain(run_section.get("class_order")))
    out["n_experiences"] = T
    atomic_write_text(folder / METRICS_FILE, json.dumps(_plain(out), indent=2, allow_nan=True) + "\n")
    return folder


def _iter_cell_dirs(out_dir: Path) -> Iterable[tuple[str, int, str | None, Path]]:
    """(strategy, seed, order named by the folder or None, folder) for every
    ``<strategy>/seed<k>[_<order>]`` folder, sorted."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    cells = []
    for strat in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for sd in strat.iterdir():
            m = _SEED_DIR.match(sd.name)
            if m and sd.is_dir():
                cells.append((strat.name, int(m.group(1)), m.group(2), sd))
    return sorted(cells, key=lambda c: (c[0], c[1], c[2] or ""))


def _cell_order(m: dict, folder_order: str | None, config: dict | None) -> str:
    """The cell's class-order label: metrics.json's, else the folder's, else from config.yaml
    (cells written before class orders were a grid axis)."""
    if m.get("order"):
        return str(m["order"])
    if folder_order:
        return folder_order
    stream = (config or {}).get("stream") or {}
    order = stream.get("class_order", "natural")
    if isinstance(order, list):
        return "custom0"
    return f"order{stream.get('class_order_seed', 0)}" if order == "shuffled" else "natural"


def write_summary(out_dir: Path) -> Path:
    """Rebuild ``summary.csv`` from every complete cell's ``metrics.json``; return its path.

    Rebuilt from scratch each time, so a rerun that skipped finished cells still lists them.
    Incomplete cells are left out (with an :class:`IncompleteCellWarning`).
    """
    rows = []
    where: dict[tuple, Path] = {}
    for strategy, seed, folder_order, folder in _iter_cell_dirs(out_dir):
        path = folder / METRICS_FILE
        if not path.exists():
            warnings.warn(f"{folder}: incomplete cell (no {METRICS_FILE}); left out of the summary",
                          IncompleteCellWarning, stacklevel=2)
            continue
        m = _read_metrics(path, strategy, seed)
        if not m.get("order"):
            config = _read_config(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else None
            m["order"] = _cell_order(m, folder_order, config)
        key = (strategy, seed, m["order"])
        if key in where:  # one cell counted twice would weigh double in every mean
            raise UserError(f"{where[key]} and {folder} hold the same cell ({strategy}, seed {seed}, class order "
                            f"{m['order']}); keep one of them (move the other out of {out_dir})")
        where[key] = folder
        rows.append(_metrics_row(m))
    target = Path(out_dir) / SUMMARY_FILE
    atomic_write_text(target, _csv_text(rows, SUMMARY_COLUMNS))
    return target


def _metrics_row(m: dict) -> dict:
    return {c: m.get(c) for c in SUMMARY_COLUMNS}


# --------------------------------------------------------------------------- reading


@dataclass
class RunData:
    """Everything plots and reports need from one or more run folders, as tidy frames.

    Every frame has a ``run`` column (the folder's name, or ``parent/name`` when two folders
    share a name) in front of the file's own columns, so several runs stay apart.
    ``summary`` is built from the cells' ``metrics.json`` (the authoritative numbers).
    ``configs`` maps ``(run, strategy, seed, order)`` to the cell's resolved config.
    """

    run_dirs: dict[str, Path]
    accuracy: "pd.DataFrame"
    timings: "pd.DataFrame"
    summary: "pd.DataFrame"
    inference: "pd.DataFrame"
    configs: dict[tuple[str, str, int, str], dict] = field(default_factory=dict)
    incomplete: list[Path] = field(default_factory=list)
    robustness: "pd.DataFrame | None" = None  # accuracy under corruptions, cells that have robustness.csv

    @property
    def runs(self) -> list[str]:
        return list(self.run_dirs)

    @property
    def strategies(self) -> list[str]:
        return sorted(set(self.summary["strategy"]))


def _fail(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what}")


def _read_csv(path: Path, columns: list[str], *, numeric: list[str], required: list[str],
              nonneg: list[str] = (), unit: list[str] = (), optional: list[str] = ()) -> "pd.DataFrame":
    """Read and validate one result CSV; every problem is a one-line UserError naming ``path``.
    ``optional`` columns, added after the format's first version, read as empty when absent."""
    import pandas as pd

    if not path.is_file():
        raise _fail(path, "missing (expected a file written by `cil run`)")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise _fail(path, f"empty file; expected a CSV with columns {', '.join(columns)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"not a readable CSV ({first})") from None
    for col in optional:
        if col not in df.columns:
            df[col] = float("nan")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise _fail(path, f"missing column(s) {', '.join(missing)}; expected {', '.join(columns)}")
    df = df[columns].copy()
    if df.empty:
        raise _fail(path, "has a header but no rows")
    for col in numeric:
        conv = pd.to_numeric(df[col], errors="coerce")
        bad = conv.isna() & df[col].notna()
        if bad.any():
            raise _fail(path, f"column {col} has non-numeric value {df[col][bad].iloc[0]!r} "
                              f"(line {int(bad.idxmax()) + 2})")
        df[col] = conv.astype(float)
    for col in required:
        if df[col].isna().any():
            raise _fail(path, f"column {col} has an empty value (line {int(df[col].isna().idxmax()) + 2})")
    for col in nonneg:
        neg = df[col] < 0
        if neg.any():
            raise _fail(path, f"column {col} has negative value {df[col][neg].iloc[0]} "
                              f"(line {int(neg.idxmax()) + 2})")
    for col in unit:
        out = (df[col] < 0) | (df[col] > 1)
        if out.any():
            raise _fail(path, f"{col} {df[col][out].iloc[0]} outside [0, 1] (line {int(out.idxmax()) + 2}); "
                              "accuracies are fractions, not percentages")
    return df


def _check_key(df: "pd.DataFrame", path: Path, strategy: str, seed: int) -> None:
    """The strategy/seed columns must name the folder the file lies in."""
    if (df["strategy"].astype(str) != strategy).any():
        other = df["strategy"][df["strategy"].astype(str) != strategy].iloc[0]
        raise _fail(path, f"strategy column says {other!r} but the file lies in folder {strategy!r}")
    if (df["seed"] != seed).any():
        other = df["seed"][df["seed"] != seed].iloc[0]
        raise _fail(path, f"seed column says {other:g} but the file lies in folder seed{seed}")
    if df["protocol"].nunique() != 1:
        raise _fail(path, f"several protocols in one cell: {', '.join(map(str, df['protocol'].unique()))}")


def _integral(df: "pd.DataFrame", path: Path, cols: list[str]) -> None:
    for col in cols:
        bad = (df[col] % 1 != 0) | (df[col] < 0)
        if bad.any():
            raise _fail(path, f"column {col} must hold whole numbers >= 0, found {df[col][bad].iloc[0]}")
        df[col] = df[col].astype(int)


def _read_accuracy(path: Path, strategy: str, seed: int) -> "pd.DataFrame":
    df = _read_csv(path, ACCURACY_COLUMNS, numeric=["seed", "train_exp", "eval_exp", "accuracy"],
                   required=ACCURACY_COLUMNS, unit=["accuracy"])
    _integral(df, path, ["train_exp", "eval_exp"])
    _check_key(df, path, strategy, seed)
    T = int(max(df["train_exp"].max(), df["eval_exp"].max())) + 1
    dup = df.duplicated(["train_exp", "eval_exp"])
    if dup.any():
        r = df[dup].iloc[0]
        raise _fail(path, f"R[{r.train_exp}][{r.eval_exp}] appears twice")
    if len(df) != T * T:
        have = set(zip(df["train_exp"], df["eval_exp"]))
        gap = next((i, j) for i in range(T) for j in range(T) if (i, j) not in have)
        raise _fail(path, f"incomplete matrix: {len(df)} of {T}x{T} entries, R[{gap[0]}][{gap[1]}] missing")
    df["seed"] = df["seed"].astype(int)
    return df.sort_values(["train_exp", "eval_exp"]).reset_index(drop=True)


def _read_timings(path: Path, strategy: str, seed: int, T: int) -> "pd.DataFrame":
    df = _read_csv(path, TIMING_COLUMNS,
                   numeric=["seed", "train_exp", "train_seconds", "eval_seconds", "peak_memory_mb"],
                   required=KEY_COLUMNS + ["train_exp", "train_seconds", "eval_seconds"],
                   nonneg=["train_seconds", "eval_seconds", "peak_memory_mb"])
    _integral(df, path, ["train_exp"])
    _check_key(df, path, strategy, seed)
    if df["train_exp"].max() >= T:
        raise _fail(path, f"train_exp {df['train_exp'].max()} but the accuracy matrix has {T} experiences")
    df["seed"] = df["seed"].astype(int)
    return df


def _read_inference(path: Path, strategy: str, seed: int, n_classes: int) -> "pd.DataFrame":
    """inference.csv; rows without ``classes`` (files from before that column) were scored against
    every class of the cell's stream, ``n_classes``."""
    df = _read_csv(path, INFERENCE_COLUMNS,
                   numeric=["seed", "accuracy", "images_per_second", "token_forwards_per_image",
                            "seconds_per_image", "classes"],
                   required=KEY_COLUMNS + ["setting", "accuracy"], unit=["accuracy"],
                   nonneg=["images_per_second", "token_forwards_per_image", "seconds_per_image"],
                   optional=["classes"])
    _check_key(df, path, strategy, seed)
    df["classes"] = df["classes"].fillna(n_classes)
    if df["classes"].isna().any():
        raise _fail(path, "column classes is empty and the cell's config.yaml names no run.class_order "
                          "to take the class count from")
    _integral(df, path, ["classes"])
    if (df["classes"] < 1).any():
        raise _fail(path, f"classes {df['classes'][df['classes'] < 1].iloc[0]:g} is not a positive count")
    df["seed"] = df["seed"].astype(int)
    df["classes"] = df["classes"].astype(int)
    df["setting"] = df["setting"].astype(str)
    return df


def _read_robustness(path: Path, strategy: str, seed: int, T: int) -> "pd.DataFrame":
    df = _read_csv(path, ROBUSTNESS_COLUMNS, numeric=["seed", "train_exp", "severity", "accuracy"],
                   required=ROBUSTNESS_COLUMNS, unit=["accuracy"])
    _integral(df, path, ["train_exp", "severity"])
    _check_key(df, path, strategy, seed)
    if df["train_exp"].max() >= T:
        raise _fail(path, f"train_exp {df['train_exp'].max()} but the accuracy matrix has {T} experiences")
    df["seed"] = df["seed"].astype(int)
    df["corruption"] = df["corruption"].astype(str)
    return df


def _read_metrics(path: Path, strategy: str, seed: int) -> dict:
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(path, f"cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise _fail(path, f"not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(m, dict):
        raise _fail(path, f"expected a JSON object, found {type(m).__name__}")
    missing = [k for k in METRIC_NAMES + ["train_seconds", "eval_seconds"] if k not in m]
    if missing:
        raise _fail(path, f"missing key(s) {', '.join(missing)}")
    for k in METRIC_NAMES + COST_NAMES + ROBUSTNESS_NAMES + ["n_experiences"]:
        v = m.get(k)
        if v is None:
            m[k] = math.nan
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(path, f"{k} must be a number, found {v!r}")
    for k in ("final_accuracy", "average_incremental_accuracy"):
        if not (0.0 <= m[k] <= 1.0):
            raise _fail(path, f"{k} {m[k]} outside [0, 1]")
    if str(m.get("strategy", strategy)) != strategy:
        raise _fail(path, f"strategy says {m['strategy']!r} but the file lies in folder {strategy!r}")
    if m.get("seed", seed) != seed:
        raise _fail(path, f"seed says {m['seed']!r} but the file lies in folder seed{seed}")
    m["strategy"], m["seed"] = strategy, seed
    m.setdefault("protocol", None)
    return m


def _read_config(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise _fail(path, "missing (expected the resolved protocol written by `cil run`)")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise _fail(path, f"expected a YAML mapping, found {type(cfg).__name__}")
    return cfg


def _read_one(run_dir: Path, run: str):
    import pandas as pd

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder (expected the --out folder of `cil run`)")
    acc, tim, inf, summ, configs, incomplete, rob = [], [], [], [], {}, [], []
    for strategy, seed, folder_order, folder in _iter_cell_dirs(run_dir):
        mpath = folder / METRICS_FILE
        if not mpath.exists():
            warnings.warn(f"{folder}: incomplete cell (no {METRICS_FILE}, run interrupted?); skipped",
                          IncompleteCellWarning, stacklevel=3)
            incomplete.append(folder)
            continue
        m = _read_metrics(mpath, strategy, seed)
        a = _read_accuracy(folder / ACCURACY_FILE, strategy, seed)
        T = int(a["train_exp"].max()) + 1
        if not math.isnan(m["n_experiences"]) and int(m["n_experiences"]) != T:
            raise _fail(mpath, f"n_experiences {m['n_experiences']} but {folder / ACCURACY_FILE} "
                               f"holds a {T}x{T} matrix")
        protocol = a["protocol"].iloc[0]
        if m["protocol"] is None:
            m["protocol"] = protocol
        elif str(m["protocol"]) != str(protocol):
            raise _fail(mpath, f"protocol {m['protocol']!r} differs from {ACCURACY_FILE}'s {protocol!r}")
        m["n_experiences"] = T
        config = _read_config(folder / CONFIG_FILE)
        m["order"] = order = _cell_order(m, folder_order, config)
        acc.append(_with_order(a, order))
        tim.append(_with_order(_read_timings(folder / TIMINGS_FILE, strategy, seed, T), order))
        if (folder / INFERENCE_FILE).exists():
            n_classes = len((config.get("run") or {}).get("class_order") or []) or math.nan
            inf.append(_with_order(_read_inference(folder / INFERENCE_FILE, strategy, seed, n_classes), order))
        if (folder / ROBUSTNESS_FILE).exists():
            rob.append(_with_order(_read_robustness(folder / ROBUSTNESS_FILE, strategy, seed, T), order))
        configs[(run, strategy, seed, order)] = config
        summ.append(_metrics_row(m))
    if not summ:
        raise UserError(f"{run_dir}: no completed cells (expected {run_dir}/<strategy>/seed<k>/{METRICS_FILE})")

    def frame(parts, columns):
        df = (pd.concat(parts, ignore_index=True) if parts
              else _with_order(pd.DataFrame(columns=columns), ""))
        df.insert(0, "run", run)
        return df

    summary = _with_order(pd.DataFrame(summ, columns=SUMMARY_COLUMNS), None)
    for c in ["n_experiences"] + METRIC_NAMES + COST_NAMES + ROBUSTNESS_NAMES:
        summary[c] = summary[c].astype(float)
    summary["n_experiences"] = summary["n_experiences"].astype(int)
    summary["seed"] = summary["seed"].astype(int)
    summary.insert(0, "run", run)
    return (frame(acc, ACCURACY_COLUMNS), frame(tim, TIMING_COLUMNS), summary,
            frame(inf, INFERENCE_COLUMNS), configs, incomplete, frame(rob, ROBUSTNESS_COLUMNS))


def _with_order(df: "pd.DataFrame", order: str | None) -> "pd.DataFrame":
    """Add the cell's class-order label (``order``, unless present) and ``cell``, one name per
    (seed, class order) cell: frames count and draw cells by ``cell``, never by seed alone."""
    if "order" not in df.columns:
        df.insert(df.columns.get_loc("seed") + 1, "order", order)
    df.insert(df.columns.get_loc("order") + 1, "cell",
              [f"{s}/{o}" for s, o in zip(df["seed"].astype(str) if len(df) else [], df["order"])])
    return df


def _run_names(run_dirs: list[Path]) -> list[str]:
    """Folder names, widened with parent folders until they are unique."""
    paths = [Path(p).resolve() for p in run_dirs]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise UserError(f"{dup}: run folder given twice")
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth > max(len(p.parts) for p in paths):
            return names
        depth += 1


def read_runs(run_dirs: Sequence[Path]) -> RunData:
    """Read and validate several run folders into one :class:`RunData` (``run`` keeps them apart)."""
    import pandas as pd

    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise UserError("no run folder given; pass the --out folder(s) of `cil run`")
    names = _run_names(run_dirs)
    parts = [_read_one(d, n) for d, n in zip(run_dirs, names)]

    def cat(k):
        frames = [p[k] for p in parts]
        frames = [f for f in frames if not f.empty] or frames[:1]
        return pd.concat(frames, ignore_index=True)

    configs, incomplete = {}, []
    for p in parts:
        configs.update(p[4])
        incomplete.extend(p[5])
    return RunData(run_dirs=dict(zip(names, run_dirs)), accuracy=cat(0), timings=cat(1),
                   summary=cat(2), inference=cat(3), configs=configs, incomplete=incomplete,
                   robustness=cat(6))


def read_run(run_dir: Path) -> RunData:
    """Read and validate one run folder; see :func:`read_runs`."""
    return read_runs([run_dir])


def accuracy_matrix(data: RunData, run: str, strategy: str, seed: int, order: str | None = None):
    """R as a T x T numpy array for one cell; ``order`` (a class order's label) is needed when
    the run holds the seed in several class orders."""
    import numpy as np

    a = data.accuracy
    cell = a[(a["run"] == run) & (a["strategy"] == strategy) & (a["seed"] == seed)]
    if order is not None:
        cell = cell[cell["order"] == order]
    if cell.empty:
        raise UserError(f"no accuracy matrix for run {run!r}, strategy {strategy!r}, seed {seed}"
                        + (f", class order {order}" if order is not None else ""))
    orders = sorted(cell["order"].astype(str).unique())
    if len(orders) > 1:
        raise UserError(f"run {run!r} holds {strategy!r} seed {seed} in {len(orders)} class orders "
                        f"({', '.join(orders)}); name one")
    T = int(cell["train_exp"].max()) + 1
    R = np.full((T, T), np.nan)
    R[cell["train_exp"].to_numpy(), cell["eval_exp"].to_numpy()] = cell["accuracy"].to_numpy()
    return R
