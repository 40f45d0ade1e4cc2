"""A regular (non-editable) install ships the protocols and runs one; results record which code
and which distribution made them."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

from cil.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_a_regular_install_finds_the_shipped_protocols_and_runs_one(tmp_path):
    """`pip install .` (a wheel, not editable) into a fresh environment, then a shipped protocol by
    name from another folder. The wheel is built from a copy of the sources and installed by the
    new environment's own pip, so this environment and the checkout are left as they are."""
    src = tmp_path / "src"
    for name in ("cil", "varc", "benchmarks", "setup.cfg", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("varc_cil-*.whl")
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    install = subprocess.run([str(env / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    site = next(env.glob("lib/python*/site-packages"))
    # the dependencies (torch, avalanche, ...) come from this environment, the suite from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = env / "bin" / "python"
    shipped = subprocess.run([str(python), "-c", "import cil.config as c; print(c.protocols_dir()); "
                              "print(c.__file__)"], capture_output=True, text=True, cwd=tmp_path)
    where, module = shipped.stdout.split()
    assert Path(where) == env / "share" / "varc-cil" / "protocols" and (Path(where) / "split_digits.yaml").is_file()
    assert Path(module).is_relative_to(site)
    run = subprocess.run([str(python), "-m", "cil", "run", "split_digits", "--only", "naive", "--out", "out",
                          "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "naive" / "seed0" / "metrics.json").is_file()


def test_config_records_the_code_and_the_strategys_source(tmp_path):
    proto = tmp_path / "p.yaml"
    proto.write_text(yaml.safe_dump({"name": "prov", "dataset": "digits", "training": {"epochs": 1},
                                     "strategies": {"ncm": {}}}))
    assert main(["run", str(proto), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    run = yaml.safe_load((tmp_path / "out" / "ncm" / "seed0" / "config.yaml").read_text())["run"]
    from cil import __version__

    assert run["strategy_source"] == {"module": "cil.strategies.ncm", "distribution": "varc-cil",
                                      "version": __version__}
    assert run["code"]["version"] == __version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the commit, and whether the code differs from it
        assert run["code"]["commit"] == head.stdout.strip() and isinstance(run["code"]["dirty"], bool)
