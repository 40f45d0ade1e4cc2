"""Per-cell loggers: Avalanche's TensorBoard and CSV loggers for a gradient strategy and for the
VAR classifier, and a one-line error for a logger whose package is not installed."""

import pytest
import yaml

from cil.cli import main
from cil.config import protocol_from_dict
from cil.errors import UserError
from test_varc_strategy import TINY_VAR


def test_tensorboard_and_csv_logs_for_an_sgd_strategy_and_for_varc(tmp_path):
    pytest.importorskip("tensorboard")
    proto = {"name": "logs", "dataset": "digits", "stream": {"n_experiences": 5},
             "training": {"epochs": 2, "backbone_args": {"hidden": [32]}}, "loggers": ["tensorboard", "csv"],
             "strategies": {"naive": {}, "varc": TINY_VAR}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(proto))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    for strategy in ("naive", "varc"):
        logs = tmp_path / "out" / strategy / "seed0" / "logs"
        events = list((logs / "tensorboard").glob("events.out.tfevents.*"))
        assert events and all(e.stat().st_size > 0 for e in events), strategy
        evaluation = (logs / "csv" / "eval_results.csv").read_text().splitlines()
        assert len(evaluation) > 5, strategy  # a header and rows for every experience evaluated
    training = (tmp_path / "out" / "naive" / "seed0" / "logs" / "csv" / "training_results.csv").read_text()
    assert len(training.splitlines()) >= 1 + 5 * 2  # per-epoch rows of the SGD strategy
    config = yaml.safe_load((tmp_path / "out" / "naive" / "seed0" / "config.yaml").read_text())
    assert config["loggers"] == ["tensorboard", "csv"]


def test_a_rerun_cell_keeps_its_earlier_csv_logs(tmp_path):
    proto = {"name": "logs", "dataset": "digits", "stream": {"n_experiences": 2},
             "training": {"epochs": 1, "backbone_args": {"hidden": [16]}}, "loggers": ["csv"],
             "strategies": {"naive": {}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(proto))
    logs = tmp_path / "out" / "naive" / "seed0" / "logs"
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    first = (logs / "csv" / "eval_results.csv").read_text()
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--force"]) == 0
    assert (logs / "csv.previous1" / "eval_results.csv").read_text() == first
    assert len((logs / "csv" / "eval_results.csv").read_text().splitlines()) == len(first.splitlines())


def test_unknown_or_missing_loggers_are_one_line_errors(monkeypatch):
    base = {"name": "p", "strategies": {"naive": {}}}
    with pytest.raises(UserError, match="loggers: unknown logger 'mlflow'; choose from tensorboard, csv, wandb"):
        protocol_from_dict({**base, "loggers": ["mlflow"]})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"loggers: wandb needs the 'wandb' package; install it with pip install "
                                        r"'varc-cil\[wandb\]'"):
        protocol_from_dict({**base, "loggers": ["wandb"]})
