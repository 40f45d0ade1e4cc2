"""``cil varc train | eval | sample`` end to end on the bundled 8x8 digits."""

from __future__ import annotations

import argparse
import re

import pytest

from cil.cli.varc import add_subcommands
from cil.errors import UserError


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cil")
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_train_eval_sample(tmp_path, capsys) -> None:
    ckpt, grid = tmp_path / "digits.pt", tmp_path / "grid.png"
    assert run(["varc", "train", "--dataset", "digits", "--out", str(ckpt), "--epochs", "2", "--tokenizer-epochs", "1",
                "--train-limit", "400", "--set", "width=16", "--set", "depth=1", "--set", "head=lora:2",
                "--samples", str(grid), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "tokenizer epoch 1/1" in out and "transformer epoch 2/2" in out
    assert ckpt.is_file() and grid.is_file()

    assert run(["varc", "eval", str(ckpt), "--dataset", "digits", "--limit", "60", "--json",
                str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"accuracy (\d\.\d+) on 60 test images", out)
    assert m and 0.0 <= float(m.group(1)) <= 1.0
    assert "images/s" in out and (tmp_path / "eval.json").is_file()

    assert run(["varc", "eval", str(ckpt), "--dataset", "digits", "--limit", "20", "--num-scales", "2"]) == 0
    assert "first 2 scales" in capsys.readouterr().out

    png = tmp_path / "s.png"
    assert run(["varc", "sample", str(ckpt), "--out", str(png), "--per-class", "2", "--scale", "1"]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "one row per class" in capsys.readouterr().out


def test_bad_input_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        run(["varc", "eval", str(tmp_path / "missing.pt"), "--dataset", "digits"])
    with pytest.raises(UserError, match="FIELD=VALUE"):
        run(["varc", "train", "--dataset", "digits", "--out", str(tmp_path / "x.pt"), "--set", "width"])
    with pytest.raises(UserError, match="model config"):
        run(["varc", "train", "--dataset", "digits", "--out", str(tmp_path / "x.pt"), "--set", "head=huge"])
    not_a_model = tmp_path / "other.pt"
    not_a_model.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load"):
        run(["varc", "sample", str(not_a_model), "--out", str(tmp_path / "s.png")])


def test_importing_varc_and_its_cli_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, varc, varc.config, cil.cli.varc; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
