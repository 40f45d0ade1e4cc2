"""The grid: seeds x class orders, cells as tasks of a real local Ray (one shared instance of 2
CPUs for this module), faults, and the serial path that never imports Ray."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cil.cli import main
from cil.config import protocol_from_dict
from cil.errors import UserError
from cil.streams import resolve_class_order
from test_varc_strategy import TINY_VAR

SMALL = {
    "name": "grid", "dataset": "digits",
    "stream": {"n_experiences": 5},
    "training": {"epochs": 2, "backbone_args": {"hidden": [32]}},
    "strategies": {"naive": {}, "replay": {"mem_size": 40}, "slda": {"features": "pixels"}, "varc": TINY_VAR},
}
TIMES = {"train_seconds", "eval_seconds", "peak_memory_mb"}


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance of 2 CPUs for every test here that needs one; `cil run` uses it."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def cells(out: Path) -> dict[str, Path]:
    return {f"{p.parent.parent.name}/{p.parent.name}": p.parent for p in sorted(out.glob("*/*/metrics.json"))}


def assert_same_results(a: Path, b: Path) -> None:
    """Every cell of run a equals run b's: accuracy matrices, metrics (times aside), inference
    accuracies, saved models' presence."""
    assert cells(a).keys() == cells(b).keys() and cells(a)
    for name, ca in cells(a).items():
        cb = cells(b)[name]
        assert (ca / "accuracy_matrix.csv").read_text() == (cb / "accuracy_matrix.csv").read_text(), name
        ma, mb = (json.loads((c / "metrics.json").read_text()) for c in (ca, cb))
        assert {k: v for k, v in ma.items() if k not in TIMES} == {k: v for k, v in mb.items() if k not in TIMES}
        assert (ca / "model.pt").exists() == (cb / "model.pt").exists()
        if (ca / "inference.csv").exists():
            ia, ib = (pd.read_csv(c / "inference.csv") for c in (ca, cb))
            assert ia["accuracy"].tolist() == ib["accuracy"].tolist()
        ca_cfg, cb_cfg = (yaml.safe_load((c / "config.yaml").read_text()) for c in (ca, cb))
        assert {k: v for k, v in ca_cfg.items() if k != "run"} == {k: v for k, v in cb_cfg.items() if k != "run"}


# --------------------------------------------------------------------------- the grid's axes


def test_seeds_and_class_orders_paired_or_crossed():
    base = dict(SMALL, seeds=[0, 1, 2], stream={"n_experiences": 5, "class_orders": ["natural", 1, 2]})
    paired = protocol_from_dict(dict(base, pairing="paired"))
    assert [(c.entry.name, c.seed, c.order.label) for c in paired.cells()][:5] == [
        ("naive", 0, "natural"), ("replay", 0, "natural"), ("slda", 0, "natural"), ("varc", 0, "natural"),
        ("naive", 1, "order1")]
    assert len(paired.cells()) == 3 * 4
    crossed = protocol_from_dict(base)
    assert len(crossed.cells()) == 9 * 4
    assert {(c.seed, c.order.label) for c in crossed.cells()} == {(s, o) for s in (0, 1, 2)
                                                                  for o in ("natural", "order1", "order2")}
    one = protocol_from_dict(dict(SMALL, stream={"n_experiences": 5, "class_order": "shuffled",
                                                 "class_order_seed": 7}))
    assert [c.order.label for c in one.cells()] == ["order7"] * 4
    with pytest.raises(UserError, match="pairing: paired needs as many seeds as class orders"):
        protocol_from_dict(dict(base, seeds=[0, 1], pairing="paired"))
    with pytest.raises(UserError, match="give class_orders or class_order_seed, not both"):
        protocol_from_dict(dict(base, stream={"class_orders": [1, 2], "class_order_seed": 3}))
    with pytest.raises(UserError, match=r"class_orders\[1\]: expected natural, a seed"):
        protocol_from_dict(dict(base, stream={"class_orders": ["natural", "reversed"]}))
    with pytest.raises(UserError, match="pairing: expected one of 'crossed', 'paired'"):
        protocol_from_dict(dict(base, pairing="zip"))


def test_a_parallel_run_starts_the_costliest_cells_first():
    """Declared costs order the submission (VAR before SLDA before the SGD baselines), ties keep
    the protocol's order; a cost that is not a positive number is refused at registration."""
    from cil.grid import submission_order
    from cil.strategies.registry import register

    paired = protocol_from_dict(dict(SMALL, seeds=[0, 1], stream={"n_experiences": 5, "class_orders": ["natural", 1]},
                                     pairing="paired"))
    order = [(c.entry.name, c.seed) for c in submission_order(paired.cells())]
    assert order == [("varc", 0), ("varc", 1), ("slda", 0), ("slda", 1), ("naive", 0), ("replay", 0),
                     ("naive", 1), ("replay", 1)]
    for bad in (0, -1.0, "high"):
        with pytest.raises(ValueError, match="cost must be a positive number"):
            register("never_registered", cost=bad)


def test_orders_on_the_command_line_replace_the_protocols_class_orders(tmp_path, capsys):
    proto = write(tmp_path / "p.yaml", dict(SMALL, strategies={"ncm": {}}, seeds=[0, 1, 2], pairing="paired",
                                            stream={"n_experiences": 5, "class_orders": ["natural", 1, 2]}))
    out = tmp_path / "out"
    assert main(["run", str(proto), "--out", str(out), "--quiet", "--seeds", "0", "--orders", "natural"]) == 0
    assert [p.name for p in (out / "ncm").iterdir()] == ["seed0_natural"]  # where the whole grid looks for it
    assert main(["run", str(proto), "--out", str(out), "--quiet", "--seeds", "0,1", "--orders", "natural,1"]) == 0
    assert sorted(p.name for p in (out / "ncm").iterdir()) == ["seed0_natural", "seed1_order1"]
    single = write(tmp_path / "q.yaml", dict(SMALL, strategies={"ncm": {}},
                                             stream={"n_experiences": 5, "class_order": "shuffled", "class_order_seed": 9}))
    assert main(["run", str(single), "--out", str(tmp_path / "q"), "--quiet", "--orders", "3,natural"]) == 0
    assert sorted(p.name for p in (tmp_path / "q" / "ncm").iterdir()) == ["seed0_natural", "seed0_order3"]
    assert main(["run", str(proto), "--out", str(tmp_path / "one"), "--quiet", "--seeds", "1", "--orders", "1"]) == 0
    # each cell trained in its own order, whichever order comes first and whatever the file's stream says
    for cell, (order, seed) in {tmp_path / "q" / "ncm" / "seed0_order3": ("shuffled", 3),
                                tmp_path / "q" / "ncm" / "seed0_natural": ("natural", 0),
                                tmp_path / "one" / "ncm" / "seed1_order1": ("shuffled", 1)}.items():
        recorded = json.loads((cell / "metrics.json").read_text())["class_order"]
        assert recorded == resolve_class_order(10, order, seed) != resolve_class_order(10, "shuffled", 9)
    capsys.readouterr()
    assert main(["run", str(proto), "--out", str(out), "--orders", "natural,first"]) == 2
    assert capsys.readouterr().err.startswith("error: --orders: 'first' is not a class order; give natural or a")
    assert main(["run", str(proto), "--out", str(out), "--seeds", "0"]) == 2
    assert "--seeds and --orders" in capsys.readouterr().err


def test_a_cell_has_one_folder_however_its_order_is_named(tmp_path):
    """A protocol with one class order writes seed<k>; naming that order with --orders finds the
    same folder, and only other orders get seed<k>_<order>."""
    proto = str(write(tmp_path / "p.yaml", dict(SMALL, strategies={"ncm": {}})))
    out = tmp_path / "out"
    assert main(["run", proto, "--out", str(out), "--quiet"]) == 0
    stamp = (out / "ncm" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(["run", proto, "--out", str(out), "--quiet", "--orders", "natural,1"]) == 0
    assert sorted(p.name for p in (out / "ncm").iterdir()) == ["seed0", "seed0_order1"]
    assert (out / "ncm" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert len(pd.read_csv(out / "summary.csv")) == 2


def test_a_cell_refuses_a_stream_in_another_class_order():
    from cil.runner import run_cell
    from cil.streams import protocol_stream

    proto = protocol_from_dict(dict(SMALL, strategies={"ncm": {}}, seeds=[1], pairing="paired",
                                    stream={"n_experiences": 5, "class_orders": [1]}))
    cell = proto.cells()[0]
    dataset, natural = protocol_stream(proto)  # the file's own stream: natural order
    with pytest.raises(RuntimeError, match="cell ncm seed 1 order1 was handed a stream in class order"):
        run_cell(proto, cell, dataset=dataset, stream=natural, checkpoint_dir=None, log=None)


def test_several_class_orders_get_their_own_folders_and_are_aggregated_together(tmp_path, capsys):
    proto = write(tmp_path / "p.yaml", dict(SMALL, strategies={"naive": {}}, seeds=[0, 1], pairing="paired",
                                            stream={"n_experiences": 5, "class_orders": ["natural", 3]}))
    out = tmp_path / "out"
    assert main(["run", str(proto), "--out", str(out), "--quiet"]) == 0
    assert sorted(cells(out)) == ["naive/seed0_natural", "naive/seed1_order3"]
    cfg = yaml.safe_load((out / "naive" / "seed1_order3" / "config.yaml").read_text())
    assert cfg["stream"]["class_order"] == "shuffled" and cfg["stream"]["class_order_seed"] == 3
    assert cfg["run"]["order"] == "order3" and cfg["run"]["class_order"] != list(range(10))
    summary = pd.read_csv(out / "summary.csv")
    assert summary[["seed", "order"]].values.tolist() == [[0, "natural"], [1, "order3"]]
    capsys.readouterr()
    assert main(["summarize", str(out), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["n"].tolist() == [2]
    # a rerun skips both cells
    assert main(["run", str(proto), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("already done") == 2


# --------------------------------------------------------------------------- Ray


def test_parallel_results_equal_serial_results_cell_by_cell(tmp_path, local_ray, capsys):
    proto = write(tmp_path / "p.yaml", SMALL)
    assert main(["run", str(proto), "--out", str(tmp_path / "serial"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", str(proto), "--out", str(tmp_path / "parallel"), "--workers", "2"]) == 0
    # not a terminal: the progress line once per finished cell, for a log file
    out = capsys.readouterr().out.splitlines()
    progress = [ln for ln in out if ln.startswith("grid: ")]
    n = len(cells(tmp_path / "parallel"))
    assert [ln.split(":")[1].strip() for ln in progress] == [f"{k}/{n} cells" for k in range(1, n + 1)]
    # and, from the workers, one line per finished experience of every cell (not their epochs)
    for name in ("naive", "replay", "slda", "varc"):
        steps = [ln.split(" experience ")[1].split(" ")[0] for ln in out
                 if ln.startswith(f"[{name} seed 0] experience ")]
        assert steps == [f"{k}/5" for k in range(1, 6)], name
    assert not [ln for ln in out if "epoch" in ln]
    assert_same_results(tmp_path / "serial", tmp_path / "parallel")
    assert (pd.read_csv(tmp_path / "serial" / "summary.csv").drop(columns=list(TIMES))
            .equals(pd.read_csv(tmp_path / "parallel" / "summary.csv").drop(columns=list(TIMES))))
    assert not list((tmp_path / "parallel").glob(".grid-*")) and not (tmp_path / "parallel" / ".lock").exists()


def test_a_cell_posting_its_progress_keeps_its_cpus(local_ray):
    # a Ray task that waits on ray.get lends its CPUs out, and Ray starts another task beside it:
    # posting progress must not wait, or a grid runs more cells at once than --workers
    from cil.grid import _LineBoard, line_sender

    ray = local_ray
    board = ray.remote(num_cpus=0)(_LineBoard).remote()

    @ray.remote(num_cpus=2)  # every CPU of the instance
    def cell(board):
        send, start = line_sender(board, "cell"), time.time()
        for i in range(20):
            send(f"line {i}", (i + 1) / 20)
            time.sleep(0.05)
        ray.get(board.sync.remote())
        return start, time.time()

    @ray.remote(num_cpus=1)
    def other():
        return time.time()

    first = cell.remote(board)
    seen = []
    while not seen:  # the cell runs
        seen = ray.get(board.take.remote())
    started = ray.get(other.remote())
    start, end = ray.get(first)
    assert started >= end
    seen += ray.get(board.take.remote())
    assert [line for _, _, line in seen] == [f"line {i}" for i in range(20)] and seen[-1][1] == 1.0


def test_the_time_left_counts_the_finished_experiences_of_running_cells():
    from cil.grid import _Progress

    progress = _Progress(total=4, log=None)
    progress.start -= 10.0  # ten seconds in, no cell finished: no estimate yet
    assert "left" not in progress.line()
    progress.partial["varc seed 0"] = 0.5  # half a cell in 10 s: 3.5 cells to go at that pace
    assert progress.line().endswith("0:10 elapsed, about 1:10 left")
    progress.update(done=1)
    progress.partial.pop("varc seed 0")
    assert progress.line().endswith("0:10 elapsed, about 0:30 left")


def test_a_cell_that_raises_is_named_and_the_others_are_written(tmp_path, local_ray, capsys):
    # mnist5k's 28x28 images cannot train a tokenizer for 8x8 digits: the cell raises while training
    bad = dict(SMALL, strategies={"naive": {}, "varc": {**TINY_VAR, "tokenizer_data": "mnist5k"}, "slda": {}})
    proto = write(tmp_path / "p.yaml", bad)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["run", str(proto), "--out", str(out), "--quiet", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 3 cells failed: varc seed 0 (strategies.varc.tokenizer_data: images of")
    assert "Traceback" not in last
    assert sorted(cells(out)) == ["naive/seed0", "slda/seed0"]
    assert (out / "varc" / "seed0" / "error.log").is_file()
    assert sorted(pd.read_csv(out / "summary.csv")["strategy"]) == ["naive", "slda"]
    # the serial path reports the same way
    capsys.readouterr()
    assert main(["run", str(proto), "--out", str(tmp_path / "serial"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: 1 of 3 cells failed: varc seed 0" in err
    # the failed cell's folder is named in one warning line, not as a Python warning with its source
    assert [ln for ln in err.splitlines() if "left out of the summary" in ln] == \
        [f"warning: {tmp_path / 'serial' / 'varc' / 'seed0'}: incomplete cell (no metrics.json); left out of the summary"]
    assert "IncompleteCellWarning" not in err


def test_a_worker_killed_in_the_middle_of_a_cell_is_retried_with_the_same_result(tmp_path, local_ray):
    var = {**TINY_VAR, "trunk_epochs": 3, "head_epochs": 3}
    proto = write(tmp_path / "p.yaml", dict(SMALL, strategies={"varc_kill": {"strategy": "varc", **var}}))
    out = tmp_path / "killed"
    checkpoint = out / "varc_kill" / "seed0" / "checkpoints" / "exp001.pt"
    killed: list[int] = []

    def kill_when_checkpointed():
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        found = subprocess.run(["pgrep", "-f", "ray::cil cell varc_kill seed 0"], capture_output=True, text=True)
        for pid in found.stdout.split():
            subprocess.run(["kill", "-9", pid])
            killed.append(int(pid))

    killer = threading.Thread(target=kill_when_checkpointed)
    killer.start()
    assert main(["run", str(proto), "--out", str(out), "--quiet", "--workers", "1"]) == 0
    killer.join()
    assert killed, "the cell's worker was not found"
    assert main(["run", str(proto), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    assert_same_results(out, tmp_path / "whole")


def test_ctrl_c_leaves_no_partial_files_and_a_rerun_skips_finished_cells(tmp_path):
    protocol = dict(SMALL, strategies={f"naive_{k}": {"strategy": "naive", "epochs": 30} for k in range(4)})
    proto = write(tmp_path / "p.yaml", protocol)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cil", "run", str(proto), "--out", str(out), "--quiet", "--workers", "1"]
    # Ctrl-C's default action even where this test runs with SIGINT ignored (a background job)
    run = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not cells(out) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    run.send_signal(signal.SIGINT)
    err = run.communicate(timeout=120)[1]
    assert run.returncode == 130, err
    finished = set(cells(out))
    assert finished and len(finished) < 4
    started = {f"{p.parent.name}/{p.name}" for p in out.glob("*/seed*")}
    assert started == finished  # nothing half-written: only complete cells have folders
    assert not (out / ".lock").exists() and not list(out.glob(".grid-*"))
    rerun = subprocess.run(cmd[:-3] + ["--workers", "1"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("already done") == len(finished)
    assert len(cells(out)) == 4


def test_without_workers_ray_is_never_imported(tmp_path):
    proto = write(tmp_path / "p.yaml", dict(SMALL, strategies={"naive": {}}))
    code = ("import sys; from cil.cli import main; "
            f"rc = main(['run', {str(proto)!r}, '--out', {str(tmp_path / 'out')!r}, '--quiet']); "
            "print(rc, 'ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["0", "False"], r.stderr


def test_workers_and_address_options_are_checked(tmp_path, capsys):
    proto = str(write(tmp_path / "p.yaml", SMALL))
    for args, fragment in ((["--workers", "0"], "--workers: expected a positive number"),
                           (["--workers", "x"], "--workers: expected a positive number"),
                           (["--workers", "2", "--ray-address", "auto"], "drop one of the two")):
        capsys.readouterr()
        assert main(["run", proto, "--out", str(tmp_path / "out"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and fragment in err and "\n" not in err
    assert not (tmp_path / "out").exists()
