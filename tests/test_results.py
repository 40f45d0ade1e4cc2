"""Result files: writing, completeness marks, the summary, and validating readers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cil import metrics as M
from cil import results
from cil.errors import UserError


def _matrix(T: int, rng: np.random.Generator) -> np.ndarray:
    R = np.tril(rng.uniform(0.2, 1.0, (T, T)))
    return np.round(R, 6)


def _timings(T: int) -> list[dict]:
    return [{"train_exp": i, "train_seconds": 1.0 + i, "eval_seconds": 0.25, "peak_memory_mb": 100.0 + 10 * i}
            for i in range(T)]


def _write(out: Path, strategy: str, seed: int, T: int = 3, *, inference=None, protocol="proto",
           rng=None) -> np.ndarray:
    R = _matrix(T, rng or np.random.default_rng(seed + 17 * len(strategy)))
    results.write_cell(out, protocol=protocol, strategy=strategy, seed=seed, accuracy_matrix=R.tolist(),
                       timings=_timings(T), metrics={}, inference=inference,
                       config={"name": protocol, "stream": {"n_experiences": T},
                               "run": {"strategy": strategy, "seed": seed, "class_order": list(range(2 * T))}})
    return R


def _one_line_error(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# ------------------------------------------------------------------ writing


def test_atomic_write_creates_parents_leaves_no_temp_and_honours_umask(tmp_path):
    target = tmp_path / "a" / "b" / "f.txt"
    old = os.umask(0o022)
    try:
        results.atomic_write_text(target, "one")
        results.atomic_write_text(target, "two")
    finally:
        os.umask(old)
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
    assert target.stat().st_mode & 0o044 == 0o044  # readable by group and others, like any other file


def test_write_cell_round_trip(tmp_path):
    inf = [{"setting": "varc", "accuracy": 0.5, "images_per_second": 20.0, "token_forwards_per_image": 64,
            "seconds_per_image": 0.05},
           {"setting": "prune[4:3]", "accuracy": 0.45, "images_per_second": 40.0,
            "token_forwards_per_image": 32, "seconds_per_image": 0.025, "classes": 4}]
    R = _write(tmp_path, "varc", 3, T=4, inference=inf)
    cell = results.cell_dir(tmp_path, "varc", 3)
    assert cell == tmp_path / "varc" / "seed3"
    assert sorted(p.name for p in cell.iterdir()) == sorted(
        ["accuracy_matrix.csv", "timings.csv", "config.yaml", "inference.csv", "metrics.json"])

    data = results.read_run(tmp_path)
    np.testing.assert_allclose(results.accuracy_matrix(data, data.runs[0], "varc", 3), R)
    m = json.loads((cell / "metrics.json").read_text())
    assert m["n_experiences"] == 4 and m["strategy"] == "varc" and m["seed"] == 3 and m["protocol"] == "proto"
    assert m["final_accuracy"] == pytest.approx(M.final_accuracy(R))
    assert m["average_forgetting"] == pytest.approx(M.average_forgetting(R))
    assert m["bwt"] == pytest.approx(M.bwt(R))
    assert m["train_seconds"] == pytest.approx(sum(t["train_seconds"] for t in _timings(4)))
    assert m["peak_memory_mb"] == max(t["peak_memory_mb"] for t in _timings(4))
    assert m["class_order"] == list(range(8))
    row = data.summary.iloc[0]
    assert row["average_incremental_accuracy"] == pytest.approx(M.average_incremental_accuracy(R))
    assert list(data.timings["train_exp"]) == [0, 1, 2, 3]
    assert list(data.inference["setting"]) == ["varc", "prune[4:3]"]
    assert list(data.inference["classes"]) == [8, 4]  # a row without a count: every class of the stream
    assert data.configs[(data.runs[0], "varc", 3, "natural")]["stream"] == {"n_experiences": 4}
    assert set(data.accuracy.columns) == {"run", "order", "cell", *results.ACCURACY_COLUMNS}
    assert set(data.accuracy["cell"]) == {"3/natural"}


def test_write_cell_keeps_runner_metrics_and_rejects_bad_matrices(tmp_path):
    R = [[0.9, 0.0], [0.5, 0.8]]
    results.write_cell(tmp_path, protocol="p", strategy="s", seed=0, accuracy_matrix=R, timings=_timings(2),
                       metrics={"final_accuracy": 0.65, "note": np.float32(1.5)}, config={})
    m = json.loads((results.cell_dir(tmp_path, "s", 0) / "metrics.json").read_text())
    assert m["final_accuracy"] == 0.65 and m["note"] == 1.5
    with pytest.raises(ValueError, match="square"):
        results.write_cell(tmp_path, protocol="p", strategy="s", seed=1, accuracy_matrix=[[0.5, 0.5]],
                           timings=[], metrics={}, config={})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        results.write_cell(tmp_path, protocol="p", strategy="s", seed=1, accuracy_matrix=[[85.0]],
                           timings=[], metrics={}, config={})


def test_cell_done_follows_metrics_json(tmp_path):
    assert not results.cell_done(tmp_path, "ewc", 0)
    _write(tmp_path, "ewc", 0)
    assert results.cell_done(tmp_path, "ewc", 0)
    mpath = results.cell_dir(tmp_path, "ewc", 0) / "metrics.json"
    mpath.write_text('{"final_accuracy": ')  # torn file
    assert not results.cell_done(tmp_path, "ewc", 0)
    mpath.unlink()
    assert not results.cell_done(tmp_path, "ewc", 0)


def test_cell_dir_rejects_names_that_escape_the_folder(tmp_path):
    for bad in ("../x", "a/b", "..", ""):
        with pytest.raises(UserError):
            results.cell_dir(tmp_path, bad, 0)


def test_write_summary_rebuilds_from_every_cell_and_skips_incomplete(tmp_path):
    _write(tmp_path, "naive", 0)
    _write(tmp_path, "naive", 1)
    first = pd.read_csv(results.write_summary(tmp_path))
    assert len(first) == 2
    _write(tmp_path, "ewc", 0)  # a later run that only adds one cell
    (tmp_path / "ewc" / "seed1").mkdir()  # an interrupted cell
    with pytest.warns(results.IncompleteCellWarning, match="seed1"):
        summary = pd.read_csv(results.write_summary(tmp_path))
    assert list(summary.columns) == results.SUMMARY_COLUMNS
    assert sorted(zip(summary["strategy"], summary["seed"])) == [("ewc", 0), ("naive", 0), ("naive", 1)]
    for _, row in summary.iterrows():
        m = json.loads((results.cell_dir(tmp_path, row["strategy"], row["seed"]) / "metrics.json").read_text())
        for k in results.METRIC_NAMES + results.COST_NAMES:
            assert row[k] == pytest.approx(m[k])


def test_one_cell_in_two_folders_is_refused_not_counted_twice(tmp_path):
    _write(tmp_path, "naive", 0)
    shutil.copytree(tmp_path / "naive" / "seed0", tmp_path / "naive" / "seed0_natural")  # same cell, other name
    with pytest.raises(UserError) as exc:
        results.write_summary(tmp_path)
    assert "hold the same cell (naive, seed 0, class order natural); keep one" in str(exc.value)
    assert not (tmp_path / "summary.csv").exists()


def test_accuracy_matrix_of_a_seed_run_in_two_class_orders_needs_the_order(tmp_path):
    mats = {}
    for order in ("natural", "order1"):
        mats[order] = np.tril(np.full((2, 2), 0.5 if order == "natural" else 0.7))
        results.write_cell(tmp_path, protocol="p", strategy="naive", seed=0, order=order,
                           accuracy_matrix=mats[order].tolist(), timings=_timings(2), metrics={},
                           config={"name": "p", "stream": {"n_experiences": 2}, "run": {"order": order}})
    data = results.read_run(tmp_path)
    for order, R in mats.items():
        np.testing.assert_allclose(results.accuracy_matrix(data, data.runs[0], "naive", 0, order), R)
    with pytest.raises(UserError, match="in 2 class orders \\(natural, order1\\); name one"):
        results.accuracy_matrix(data, data.runs[0], "naive", 0)


# ------------------------------------------------------------------ reading


def test_reader_on_hand_built_files(tmp_path):
    """Files written with plain pandas (not write_cell) read back to the same numbers."""
    T = 3
    R = {0: np.array([[0.9, 0.0, 0.0], [0.4, 0.85, 0.0], [0.3, 0.5, 0.8]]),
         1: np.array([[0.95, 0.0, 0.0], [0.5, 0.9, 0.0], [0.2, 0.6, 0.7]])}
    for seed, mat in R.items():
        cell = tmp_path / "lwf" / f"seed{seed}"
        cell.mkdir(parents=True)
        pd.DataFrame([{"protocol": "hand", "strategy": "lwf", "seed": seed, "train_exp": i, "eval_exp": j,
                       "accuracy": mat[i, j]} for i in range(T) for j in range(T)]
                     ).to_csv(cell / "accuracy_matrix.csv", index=False)
        pd.DataFrame({"protocol": "hand", "strategy": "lwf", "seed": seed, "train_exp": range(T),
                      "train_seconds": [2.0, 2.5, 3.0], "eval_seconds": [0.1] * T,
                      "peak_memory_mb": [None] * T}).to_csv(cell / "timings.csv", index=False)
        (cell / "config.yaml").write_text(yaml.safe_dump({"name": "hand"}))
        (cell / "metrics.json").write_text(json.dumps({
            "final_accuracy": float(mat[-1].mean()), "average_incremental_accuracy": 0.7,
            "average_forgetting": 0.3, "bwt": -0.3, "train_seconds": 7.5, "eval_seconds": 0.3,
            "peak_memory_mb": None}))
    data = results.read_run(tmp_path)
    for seed, mat in R.items():
        np.testing.assert_allclose(results.accuracy_matrix(data, tmp_path.name, "lwf", seed), mat)
    assert list(data.summary["protocol"]) == ["hand", "hand"]  # taken from the CSV when metrics omit it
    assert list(data.summary["n_experiences"]) == [3, 3]
    assert data.summary["final_accuracy"].tolist() == pytest.approx([R[0][-1].mean(), R[1][-1].mean()])
    assert data.summary["peak_memory_mb"].isna().all()
    assert data.inference.empty


@pytest.fixture
def cell(tmp_path):
    _write(tmp_path, "ewc", 0)
    return results.cell_dir(tmp_path, "ewc", 0)


def _edit_csv(path: Path, fn) -> None:
    df = pd.read_csv(path)
    fn(df).to_csv(path, index=False)


BROKEN = {
    "missing accuracy file": ("accuracy_matrix.csv", lambda p: p.unlink(), "missing"),
    "missing column": ("accuracy_matrix.csv",
                       lambda p: _edit_csv(p, lambda d: d.drop(columns=["eval_exp"])), "eval_exp"),
    "unparsable csv": ("accuracy_matrix.csv",
                       lambda p: p.write_text('protocol,strategy\n"unterminated,x\n'), "CSV"),
    "empty csv": ("timings.csv", lambda p: p.write_text(""), "empty"),
    "percent accuracy": ("accuracy_matrix.csv",
                         lambda p: _edit_csv(p, lambda d: d.assign(accuracy=d["accuracy"] * 100 + 1)),
                         "outside [0, 1]"),
    "non-numeric accuracy": ("accuracy_matrix.csv",
                             lambda p: _edit_csv(p, lambda d: d.assign(accuracy="high")), "non-numeric"),
    "hole in matrix": ("accuracy_matrix.csv", lambda p: _edit_csv(p, lambda d: d.iloc[:-2]), "missing"),
    "duplicate entry": ("accuracy_matrix.csv",
                        lambda p: _edit_csv(p, lambda d: pd.concat([d, d.iloc[:1]])), "twice"),
    "wrong strategy": ("accuracy_matrix.csv",
                       lambda p: _edit_csv(p, lambda d: d.assign(strategy="naive")), "folder"),
    "negative time": ("timings.csv",
                      lambda p: _edit_csv(p, lambda d: d.assign(train_seconds=-1.0)), "negative"),
    "timings missing column": ("timings.csv",
                               lambda p: _edit_csv(p, lambda d: d.drop(columns=["eval_seconds"])),
                               "eval_seconds"),
    "bad json": ("metrics.json", lambda p: p.write_text("{'final_accuracy': 1}"), "JSON"),
    "json list": ("metrics.json", lambda p: p.write_text("[1, 2]"), "object"),
    "json missing key": ("metrics.json", lambda p: p.write_text(json.dumps({"final_accuracy": 0.5})), "bwt"),
    "json string metric": ("metrics.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "bwt": "low"})), "bwt"),
    "missing config": ("config.yaml", lambda p: p.unlink(), "missing"),
    "bad yaml": ("config.yaml", lambda p: p.write_text("a: [1, 2\n"), "YAML"),
    "bad inference": ("inference.csv", lambda p: p.write_text(
        "protocol,strategy,seed,setting,accuracy\nproto,ewc,0,varc,0.5\n"), "seconds_per_image"),
    "inference zero classes": ("inference.csv", lambda p: p.write_text(
        "protocol,strategy,seed,setting,accuracy,images_per_second,token_forwards_per_image,seconds_per_image,"
        "classes\nproto,ewc,0,varc,0.5,,,,0\n"), "classes 0 is not a positive count"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_give_one_line_error_naming_the_file(cell, case):
    name, breaker, words = BROKEN[case]
    path = cell / name
    breaker(path)
    with pytest.raises(UserError) as exc:
        results.read_run(cell.parent.parent)
    assert words in _one_line_error(exc, path)


def test_incomplete_cells_are_skipped_with_a_warning(tmp_path):
    _write(tmp_path, "naive", 0)
    (tmp_path / "naive" / "seed1").mkdir()
    (tmp_path / "naive" / "seed1" / "accuracy_matrix.csv").write_text("half a fi")
    with pytest.warns(results.IncompleteCellWarning, match="seed1"):
        data = results.read_run(tmp_path)
    assert data.summary["seed"].tolist() == [0]
    assert data.incomplete == [tmp_path / "naive" / "seed1"]


def test_folder_without_complete_cells_is_an_error(tmp_path):
    (tmp_path / "naive" / "seed0").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match="no completed cells"):
            results.read_run(tmp_path)
    with pytest.raises(UserError, match="no such run folder"):
        results.read_run(tmp_path / "absent")


def test_several_runs_stay_apart_even_with_the_same_folder_name(tmp_path):
    a, b = tmp_path / "v1" / "digits", tmp_path / "v2" / "digits"
    Ra = _write(a, "naive", 0, protocol="digits")
    Rb = _write(b, "naive", 0, protocol="digits", rng=np.random.default_rng(99))
    data = results.read_runs([a, b])
    assert data.runs == ["v1/digits", "v2/digits"]
    np.testing.assert_allclose(results.accuracy_matrix(data, "v1/digits", "naive", 0), Ra)
    np.testing.assert_allclose(results.accuracy_matrix(data, "v2/digits", "naive", 0), Rb)
    assert data.summary.groupby("run").size().to_dict() == {"v1/digits": 1, "v2/digits": 1}
    with pytest.raises(UserError, match="twice"):
        results.read_runs([a, a])


def test_importing_results_does_not_import_pandas():
    code = "import sys, cil.results, cil.report; print('pandas' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
