"""Bad input, tampered files, concurrent runs and file-system failures, met as a user meets them:
through `cil run`. Each ends in a non-zero exit and one `error:` line that names the problem,
with no traceback and no result files; a damaged or foreign checkpoint never runs code."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cil.cli import main
from test_varc_strategy import TINY_VAR, _interrupted_run as interrupted_run

TINY = {
    "name": "tiny", "dataset": "digits",
    "stream": {"n_experiences": 2},
    "training": {"epochs": 1, "backbone_args": {"hidden": [32]}},
    "strategies": {"naive": {}},
}
VAR_PROTOCOL = {"name": "var", "dataset": "digits", "stream": {"n_experiences": 5}, "strategies": {"varc": TINY_VAR}}


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def files_under(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()] if out.exists() else []


def run_fails(capsys, args: list[str], *fragments: str) -> str:
    """`cil run ARGS` exits 2 with one `error:` line holding every fragment (in process, so an
    unexpected exception would surface here as a traceback and fail the test)."""
    capsys.readouterr()
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def npz(tmp_path: Path, **changes) -> str:
    """A small valid npz dataset (4 classes of 8x8 images), with ``changes`` applied."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), "y_train": np.arange(40) % 4,
              "x_test": rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), "y_test": np.arange(12) % 4}
    arrays.update(changes)
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("settings, fragment", [
    ({"head_epochs": 0}, "strategies.varc.head_epochs must be >= 1, got 0"),
    ({"head_epochs": -3}, "strategies.varc.head_epochs must be >= 1, got -3"),
    ({"head_lr": 0}, "strategies.varc.head_lr must be > 0"),
    ({"tokenizer_epochs": -1}, "strategies.varc.tokenizer_epochs must be >= 1"),
    ({"batch_size": 0}, "strategies.varc.batch_size must be >= 1"),
    ({"cca_epochs": -1}, "strategies.varc.cca_epochs must be >= 0"),
    ({"smooth_std": -0.5}, "strategies.varc.smooth_std must be >= 0"),
    ({"report_limit": 0}, "strategies.varc.report_limit"),
    ({"model": {"depth": 0}}, "strategies.varc.model: depth must be >= 1, got 0"),
    ({"model": {"width": -8}}, "strategies.varc.model: width must be >= 1, got -8"),
    ({"model": {"widht": 64}}, "unknown key 'widht'; allowed keys: downsample"),
    ({"model": {"width": "abc"}}, "strategies.varc.model.width: expected int, got 'abc'"),
    ({"model": {"image_size": 16}}, "strategies.varc.model.image_size is set by the dataset's images"),
    ({"model": {"patch_nums": [1, 3, 2]}}, "strictly increasing"),
    ({"head": "lora:x"}, "strategies.varc.head"),
    ({"tokenizer_data": "nope"}, "strategies.varc.tokenizer_data: unknown dataset 'nope'"),
    ({"prune": [[9, 2]]}, "num_scales must be 1.."),
    ({"smooth_samples": 3}, "smooth_std > 0"),
    ({"report_settings": [{"prune": [[2, 2]], "smoth": 1}]}, "report_settings[0]: unknown key 'smoth'"),
])
def test_every_var_setting_is_checked_before_any_cell_trains(tmp_path, capsys, settings, fragment):
    # naive comes first: no cell may train (and write files) before the bad VARC setting is found
    proto = write(tmp_path / "p.yaml", dict(TINY, strategies={"naive": {}, "varc": settings}))
    run_fails(capsys, [str(proto), "--out", str(tmp_path / "out")], fragment)
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("entry, fragment", [
    ({"strategy": "replay", "mem_size": 0}, "strategies.replay_0.mem_size must be >= 1"),
    ({"strategy": "gem", "patterns_per_exp": -1}, "strategies.replay_0.patterns_per_exp must be >= 1"),
    ({"strategy": "ewc", "mode": "online"}, "strategies.replay_0: mode 'online' needs decay_factor"),
    ({"strategy": "ewc", "ewc_lambda": -1}, "ewc_lambda must be >= 0"),
    ({"strategy": "slda", "shrinkage": 2}, "shrinkage must be >= 0 and <= 1"),
    ({"strategy": "lwf", "alpha": []}, "strategies.replay_0.alpha: give a number or a non-empty list"),
])
def test_baseline_settings_are_checked_at_load_under_the_entrys_name(tmp_path, capsys, entry, fragment):
    proto = write(tmp_path / "p.yaml", dict(TINY, strategies={"naive": {}, "replay_0": entry}))
    run_fails(capsys, [str(proto), "--out", str(tmp_path / "out")], fragment)
    assert files_under(tmp_path / "out") == []


def test_a_key_given_twice_in_the_yaml_is_refused(tmp_path, capsys):
    text = "name: dup\ndataset: digits\ntraining: {epochs: 1}\nstrategies:\n  naive: {}\n  ewc: {ewc_lambda: 1}\n" \
           "  ewc: {ewc_lambda: 5}\n"
    proto = write(tmp_path / "p.yaml", text)
    run_fails(capsys, [str(proto), "--out", str(tmp_path / "out")], "key 'ewc' appears twice", "lines 6 and 7")
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("only", [",", "", " , "])
def test_an_empty_only_is_refused(tmp_path, capsys, only):
    proto = write(tmp_path / "p.yaml", TINY)
    run_fails(capsys, [str(proto), "--out", str(tmp_path / "out"), "--only", only], "names no strategy", "naive")
    assert files_under(tmp_path / "out") == []


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("changes, fragment", [
    ({"y_train": np.zeros(40, dtype=np.int64), "y_test": np.zeros(12, dtype=np.int64)},
     "has 1 class; class-incremental learning needs at least 2"),
    ({"y_test": np.arange(12) % 3}, "class 3 (3) has no test images"),
    ({"x_train": np.full((40, 8, 8), np.nan, dtype=np.float32)}, "x_train (float32) holds NaN values"),
])
def test_datasets_that_cannot_make_a_class_incremental_stream(tmp_path, capsys, changes, fragment):
    proto = write(tmp_path / "p.yaml", dict(TINY, dataset=npz(tmp_path, **changes)))
    run_fails(capsys, [str(proto), "--out", str(tmp_path / "out")], fragment)
    assert files_under(tmp_path / "out") == []


def test_non_square_images_are_refused_before_the_first_cell_when_a_strategy_needs_square(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = npz(tmp_path, x_train=rng.integers(0, 256, (40, 8, 6), dtype=np.uint8),
               x_test=rng.integers(0, 256, (12, 8, 6), dtype=np.uint8))
    proto = write(tmp_path / "p.yaml", dict(TINY, dataset=data, strategies={"naive": {}, "varc": TINY_VAR}))
    run_fails(capsys, [str(proto), "--out", str(tmp_path / "out")], "strategies.varc.model: images must be square")
    assert files_under(tmp_path / "out") == []
    assert main(["run", str(proto), "--out", str(tmp_path / "out"), "--only", "naive", "--quiet"]) == 0


# --------------------------------------------------------------------------- output folders


def test_output_paths_that_cannot_be_run_folders(tmp_path, capsys):
    proto = str(write(tmp_path / "p.yaml", TINY))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    run_fails(capsys, [proto, "--out", str(a_file)], "is a file, not a folder")
    run_fails(capsys, [proto, "--out", str(a_file / "sub")], "a part of this path is a file")
    run_fails(capsys, [proto, "--out", str(tmp_path / ("n" * 300))], "path too long")
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "p.yaml"]


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """A small tmpfs at ``path`` (needs root and a kernel that lets this process mount)."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_output_folder(tmp_path, capsys):
    proto = str(write(tmp_path / "p.yaml", TINY))
    with tmpfs(tmp_path / "ro", "ro", "size=1m") as ro:
        run_fails(capsys, [proto, "--out", str(ro / "out")], "read-only file system", "choose a writable --out")


def test_a_full_disk_ends_in_one_line_and_leaves_no_temp_file(tmp_path):
    """The VAR classifier's per-experience checkpoints fill a 2 MB disk."""
    proto = write(tmp_path / "p.yaml", dict(VAR_PROTOCOL, strategies={"varc": {**TINY_VAR, "model": {}}}))
    with tmpfs(tmp_path / "small", "size=2m") as disk:
        r = subprocess.run([sys.executable, "-m", "cil", "run", str(proto), "--out", str(disk / "out"), "--quiet"],
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        err = r.stderr.strip()
        assert err.startswith("error: disk full: cannot write ") and "MB needed" in err and "\n" not in err, err
        assert "Traceback" not in r.stderr
        assert [p for p in disk.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"] == []


def test_temp_files_left_by_a_killed_run_are_swept(tmp_path):
    proto = write(tmp_path / "p.yaml", TINY)
    out = tmp_path / "out"
    assert main(["run", str(proto), "--out", str(out), "--quiet"]) == 0
    cell = out / "naive" / "seed0"
    left = [cell / "model.pt.k2j3h4.tmp", cell / "checkpoints" / ".exp001.pt.123.abcd.tmp", out / ".summary.csv.9.ff.tmp"]
    for p in left:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    assert main(["run", str(proto), "--out", str(out), "--quiet"]) == 0
    assert not any(p.exists() for p in left)


# --------------------------------------------------------------------------- one writer


def test_the_sweep_keeps_a_live_processs_lock_candidate_and_removes_a_dead_ones(tmp_path):
    """A second ``cil run`` writes its lock candidate before linking it as the lock; the
    winner's sweep must not delete it in between (it did: a race gave 'No such file')."""
    from cil.runfolder import sweep_temp_files
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process now
    live = tmp_path / f".lock.{os.getpid()}.abcd1234.tmp"
    dead = tmp_path / f".lock.{gone.pid}.0000ffff.tmp"
    stale_dead = tmp_path / ".lock.stale.999999999.tmp"
    for p in (live, dead, stale_dead):
        p.write_text("{}")
    removed = sweep_temp_files(tmp_path)
    assert live.exists() and not dead.exists() and not stale_dead.exists()
    assert sorted(removed) == sorted([dead, stale_dead])




def _hold_lock(out: Path) -> subprocess.Popen:
    """Another process that holds ``out``'s lock until killed."""
    code = ("import sys, time; from cil.runfolder import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_on_a_locked_folder_stops_and_a_dead_owners_lock_is_taken_over(tmp_path, capsys):
    proto = str(write(tmp_path / "p.yaml", TINY))
    out = tmp_path / "out"
    out.mkdir()
    holder = _hold_lock(out)
    try:
        run_fails(capsys, [proto, "--out", str(out)], f"run folder {out} is in use by another cil run",
                  f"pid {holder.pid} on ")
        assert files_under(out) == [out / ".lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".lock").exists()  # a killed owner cannot clean up: the lock is stale now
    assert main(["run", proto, "--out", str(out), "--quiet"]) == 0
    assert (out / "naive" / "seed0" / "metrics.json").is_file() and not (out / ".lock").exists()


def test_two_concurrent_runs_on_one_folder_one_runs_the_other_names_the_lock(tmp_path):
    """Both start together and reach the lock within a second of each other; the winner then
    trains for several seconds, so the other finds the folder taken."""
    proto = write(tmp_path / "p.yaml", dict(TINY, training={"epochs": 100, "backbone_args": {"hidden": [32]}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cil", "run", str(proto), "--out", str(out), "--quiet"]
    runs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [r.communicate()[1] for r in runs]
    codes = [r.returncode for r in runs]
    assert sorted(codes) == [0, 2], errs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert errs[loser].startswith("error: run folder ") and "is in use by another cil run" in errs[loser]
    assert f"pid {runs[winner].pid} " in errs[loser] and "Traceback" not in errs[loser]
    assert (out / "naive" / "seed0" / "metrics.json").is_file() and not (out / ".lock").exists()


# --------------------------------------------------------------------------- reruns


def test_rerun_with_changed_settings_lists_the_keys(tmp_path, capsys):
    proto = str(write(tmp_path / "p.yaml", dict(TINY, strategies={"naive": {}, "ewc": {"ewc_lambda": 1.0}})))
    out = tmp_path / "out"
    assert main(["run", proto, "--out", str(out), "--quiet"]) == 0
    stamp = (out / "ewc" / "seed0" / "metrics.json").stat().st_mtime_ns
    err = run_fails(capsys, [proto, "--out", str(out), "--set", "strategies.ewc.ewc_lambda=5",
                             "--set", "training.lr=0.01"],
                    "ewc/seed0 was finished with other settings", "strategies.ewc.ewc_lambda: 1.0 -> 5.0",
                    "training.lr: 0.001 -> 0.01", "--force", "another --out")
    assert "naive" in err or "ewc" in err
    assert (out / "ewc" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    # settings that do not decide the numbers (threads, the seeds list) do not count
    assert main(["run", proto, "--out", str(out), "--quiet", "--threads", "2", "--seeds", "0"]) == 0
    assert main(["run", proto, "--out", str(out), "--quiet", "--force", "--set", "strategies.ewc.ewc_lambda=5",
                 "--set", "training.lr=0.01"]) == 0
    assert (out / "ewc" / "seed0" / "metrics.json").stat().st_mtime_ns != stamp


def test_a_cell_finished_before_a_parameter_existed_counts_as_its_default(tmp_path, capsys):
    """A new strategy parameter defaults to the old behaviour, so a cell recorded without it is
    still done at the default; at any other value it is a changed setting."""
    import yaml

    proto = str(write(tmp_path / "p.yaml", dict(TINY, strategies={"ewc": {}})))
    out = tmp_path / "out"
    assert main(["run", proto, "--out", str(out), "--quiet"]) == 0
    cfg_path = out / "ewc" / "seed0" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    default = cfg["strategies"]["ewc"].pop("ewc_lambda")
    cfg_path.write_text(yaml.safe_dump(cfg))
    stamp = (out / "ewc" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(["run", proto, "--out", str(out), "--quiet"]) == 0
    assert (out / "ewc" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    run_fails(capsys, [proto, "--out", str(out), "--set", f"strategies.ewc.ewc_lambda={default * 2}"],
              "ewc/seed0 was finished with other settings", f"strategies.ewc.ewc_lambda: '(absent)' -> {default * 2}")


def test_a_shared_training_setting_counts_only_for_the_strategies_that_read_it(tmp_path, capsys):
    """NCM reads no optimiser setting: a new learning rate leaves its finished cell valid, and
    loggers or resources never change a number."""
    proto = str(write(tmp_path / "p.yaml", dict(TINY, strategies={"naive": {}, "ncm": {}})))
    out = tmp_path / "out"
    assert main(["run", proto, "--out", str(out), "--quiet"]) == 0
    err = run_fails(capsys, [proto, "--out", str(out), "--set", "training.lr=0.01"],
                    "naive/seed0 was finished with other settings", "strategies.naive.training.lr: 0.001 -> 0.01")
    assert "ncm" not in err
    stamp = (out / "ncm" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(["run", proto, "--out", str(out), "--quiet", "--only", "ncm", "--set", "training.lr=0.01",
                 "--set", "loggers=[csv]", "--set", "strategies.ncm.resources={cpus: 1}"]) == 0
    assert (out / "ncm" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp


def test_a_successful_rerun_removes_the_failure_log_of_an_earlier_attempt(tmp_path):
    proto = str(write(tmp_path / "p.yaml", TINY))
    out = tmp_path / "out"
    (out / "naive" / "seed0").mkdir(parents=True)
    (out / "naive" / "seed0" / "error.log").write_text("Traceback of an earlier attempt\n")
    assert main(["run", proto, "--out", str(out), "--quiet"]) == 0
    assert (out / "naive" / "seed0" / "metrics.json").is_file()
    assert not (out / "naive" / "seed0" / "error.log").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--threads", "0"], "threads must be >= 1, got 0"),
    (["--seeds", ""], "--seeds: '' is not a training seed"),
    (["--seeds", "0,x"], "--seeds: 'x' is not a training seed; give integers >= 0"),
    (["--device", ""], "device: expected auto, cpu, cuda"),
    (["--data-root", " "], "--data-root: give a folder"),
    (["--orders", "1", "--set", "stream.class_order=shuffled"], "--orders replaces the protocol's class orders; "
                                                                 "drop --set stream.class_order"),
    (["--orders", "1,01"], "stream.class_orders: order1 is listed twice"),
])
def test_command_line_values_are_checked_not_dropped(tmp_path, capsys, args, fragment):
    proto = str(write(tmp_path / "p.yaml", TINY))
    run_fails(capsys, [proto, "--out", str(tmp_path / "out"), *args], fragment)
    assert not (tmp_path / "out").exists()


def test_seeds_on_the_command_line_are_decimal(tmp_path):
    proto = str(write(tmp_path / "p.yaml", TINY))
    assert main(["run", proto, "--out", str(tmp_path / "out"), "--quiet", "--seeds", "010"]) == 0
    assert [p.name for p in (tmp_path / "out" / "naive").iterdir()] == ["seed10"]  # not octal 8


# --------------------------------------------------------------------------- checkpoints


class _Payload:
    """Pickles as a call that would create ``marker``: what a crafted checkpoint could hide."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _interrupted_var_run(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A three-experience VARC run stopped (Ctrl-C) in its third experience: checkpoints 0 and 1."""
    proto = interrupted_run(tmp_path, monkeypatch, "out")
    ckpt = tmp_path / "out" / "varc" / "seed0" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["exp000.pt", "exp001.pt"]
    assert not (tmp_path / "out" / ".lock").exists()  # released on Ctrl-C too
    return proto, ckpt


def test_checkpoints_hold_only_tensors_and_plain_types(tmp_path, monkeypatch):
    _, ckpt = _interrupted_var_run(tmp_path, monkeypatch)
    state = torch.load(ckpt / "exp001.pt", weights_only=True)
    assert state["exp"] == 1 and len(state["rows"]) == 2 and set(state["rng"]) == {"torch", "numpy", "python"}


def test_a_planted_pickle_payload_is_never_run_and_is_reported(tmp_path, monkeypatch, capsys):
    proto, ckpt = _interrupted_var_run(tmp_path, monkeypatch)
    marker = tmp_path / "pwned"
    real = torch.load(ckpt / "exp001.pt", weights_only=True)
    real["strategy"]["extra"] = _Payload(marker)  # injected into a real checkpoint
    torch.save(real, ckpt / "exp001.pt")
    capsys.readouterr()
    assert main(["run", str(proto), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert err.startswith("warning: [varc seed 0] cannot use checkpoint ") and "starting the cell over" in err
    assert "\n" not in err
    assert (tmp_path / "out" / "varc" / "seed0" / "metrics.json").is_file()


def test_a_truncated_checkpoint_restarts_the_cell_and_force_never_reads_one(tmp_path, monkeypatch, capsys):
    proto, ckpt = _interrupted_var_run(tmp_path, monkeypatch)
    data = (ckpt / "exp001.pt").read_bytes()
    (ckpt / "exp001.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["run", str(proto), "--out", str(tmp_path / "out"), "--quiet", "--force"]) == 0
    assert capsys.readouterr().err == ""  # --force: the damaged file was not even opened
    (ckpt / "exp001.pt").parent.mkdir(exist_ok=True)
    (ckpt / "exp001.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "out" / "varc" / "seed0" / "metrics.json").unlink()
    assert main(["run", str(proto), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err.strip()
    assert "cannot use checkpoint" in err and "starting the cell over" in err and "\n" not in err


def test_no_loader_in_the_code_unpickles():
    root = Path(__file__).resolve().parent.parent
    found = [f"{p.relative_to(root)}:{i}" for d in ("cil", "varc", "benchmarks") for p in (root / d).rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if "weights_only=False" in line.replace(" ", "")]
    assert found == []


def test_the_console_command_shows_no_traceback(tmp_path):
    proto = write(tmp_path / "p.yaml", dict(TINY, strategies={"varc": {"model": {"width": -8}}}))
    r = subprocess.run([sys.executable, "-m", "cil", "run", str(proto), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: strategies.varc.model: width must be >= 1, got -8"
