"""The command line end to end on a tiny real protocol, and its handling of bad input."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from cil.cli import main

TINY = {
    "name": "tiny", "dataset": "digits",
    "stream": {"n_experiences": 2, "class_order": "shuffled", "class_order_seed": 7},
    "training": {"epochs": 1, "backbone_args": {"hidden": [32]}, "train_mb_size": 64},
    "strategies": {"naive": {}, "ewc": {"ewc_lambda": 1.0}},
}


def write(tmp_path, data, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_writes_every_file_and_skips_finished_cells(tmp_path, capsys):
    proto = write(tmp_path, TINY)
    out = tmp_path / "out"
    assert main(["run", str(proto), "--out", str(out), "--set", "strategies.ewc.ewc_lambda=5"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.strategy) == ["ewc", "naive"]
    for name in ("naive", "ewc"):
        cell = out / name / "seed0"
        acc = pd.read_csv(cell / "accuracy_matrix.csv")
        assert list(acc.columns) == ["protocol", "strategy", "seed", "train_exp", "eval_exp", "accuracy"]
        assert len(acc) == 4 and acc.accuracy.between(0, 1).all()
        m = json.loads((cell / "metrics.json").read_text())
        R = acc.pivot(index="train_exp", columns="eval_exp", values="accuracy").to_numpy()
        assert m["final_accuracy"] == pytest.approx(R[-1].mean())
        cfg = yaml.safe_load((cell / "config.yaml").read_text())
        assert cfg["run"]["seed"] == 0 and cfg["run"]["class_order_seed"] == 7
        assert sorted(cfg["run"]["class_order"]) == list(range(10)) and cfg["run"]["class_order"] != list(range(10))
        assert "torch" in cfg["run"]["versions"] and cfg["run"]["device"] == "cpu"
        assert (cell / "timings.csv").is_file()
    assert yaml.safe_load((out / "ewc" / "seed0" / "config.yaml").read_text())["strategies"]["ewc"]["ewc_lambda"] == 5
    stamp = (out / "naive" / "seed0" / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", str(proto), "--out", str(out), "--only", "naive"]) == 0
    assert "already done" in capsys.readouterr().out
    assert (out / "naive" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert main(["run", str(proto), "--out", str(out), "--only", "naive", "--force", "--quiet"]) == 0
    assert (out / "naive" / "seed0" / "metrics.json").stat().st_mtime_ns != stamp


def test_same_seeds_give_same_results(tmp_path):
    proto = write(tmp_path, dict(TINY, strategies={"naive": {}}))
    for d in ("a", "b"):
        assert main(["run", str(proto), "--out", str(tmp_path / d), "--quiet"]) == 0
    a = pd.read_csv(tmp_path / "a" / "naive" / "seed0" / "accuracy_matrix.csv")
    b = pd.read_csv(tmp_path / "b" / "naive" / "seed0" / "accuracy_matrix.csv")
    assert np.array_equal(a.accuracy.to_numpy(), b.accuracy.to_numpy())


def test_avalanche_internal_deprecation_warnings_are_not_shown(tmp_path):
    """Avalanche 0.6's replay buffer warns about its own deprecated internals on every
    experience; a run does not pass that on to the user, and other warnings still show."""
    import os
    import warnings

    from cil.runner import _quiet_avalanche_deprecations

    def from_avalanche(category, text="internal"):
        warnings.warn_explicit(text, category, os.path.join("site", "avalanche", "x.py"), 1)

    proto = write(tmp_path, dict(TINY, strategies={"replay": {"mem_size": 20, "batch_size_mem": 8}}))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert main(["run", str(proto), "--out", str(tmp_path / "out"), "--quiet"]) == 0
        with _quiet_avalanche_deprecations():
            from_avalanche(DeprecationWarning)
            from_avalanche(UserWarning)
        from_avalanche(DeprecationWarning, "outside a run")
    assert [(w.category, os.sep + "avalanche" + os.sep in w.filename) for w in shown
            if issubclass(w.category, DeprecationWarning) or "avalanche" in w.filename] == \
        [(UserWarning, True), (DeprecationWarning, True)]


@pytest.mark.parametrize("patch, args, fragment", [
    ({"strategies": {"nope": {}}}, [], "unknown strategy 'nope'"),
    ({"dataset": "nope"}, [], "unknown dataset 'nope'"),
    ({"bogus_key": 1}, [], "unknown key 'bogus_key'"),
    ({}, ["--set", "training.epochs=many"], "training.epochs: expected int"),
    ({"stream": {"n_experiences": 11}}, [], "n_experiences=11 is impossible"),
    ({"dataset": "mnist", "data_root": "__EMPTY__"}, [], "cil data fetch mnist"),
    ({"dataset": "npz:__BADNPZ__"}, [], "npz"),
    ({}, ["--only", "icarl"], "--only: 'icarl' is not a strategy"),
])
def test_bad_input_one_line_error_no_files(tmp_path, capsys, patch, args, fragment):
    data = dict(TINY, **patch)
    if data.get("data_root") == "__EMPTY__":
        data["data_root"] = str(tmp_path / "empty")
    if data["dataset"] == "npz:__BADNPZ__":
        bad = tmp_path / "bad.npz"
        bad.write_bytes(b"not a zip file")
        data["dataset"] = f"npz:{bad}"
    proto = write(tmp_path, data)
    out = tmp_path / "out"
    assert main(["run", str(proto), "--out", str(out)] + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_console_entry_point_exit_code_and_no_traceback(tmp_path):
    proto = write(tmp_path, dict(TINY, strategies={"ewc": {"ewc_lambda": "x"}}))
    r = subprocess.run([sys.executable, "-m", "cil", "run", str(proto)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: strategies.ewc.ewc_lambda") and "Traceback" not in r.stderr


def test_list_and_help(capsys):
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    for name in ("naive", "cumulative", "ewc", "si", "lwf", "replay", "gem", "agem", "icarl", "gdumb", "der"):
        assert f"  {name} " in out
    assert main(["list", "protocols"]) == 0
    assert "split_digits" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path):
    """``cil ... | head``: the output pipe is closed before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", "cil", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""
