"""The robustness track inside a protocol: every cell's model evaluated on corrupted copies of a
fixed, class-balanced test subset, after the last experience or after every one."""

import numpy as np
import pandas as pd
import pytest
import yaml

from cil.cli import main
from cil.config import protocol_from_dict
from cil.data import load_dataset
from cil.errors import UserError
from cil.results import ROBUSTNESS_COLUMNS, read_run
from cil.streams import robustness_subset

PROTOCOL = {
    "name": "rob", "dataset": "digits", "stream": {"n_experiences": 5},
    "training": {"epochs": 2, "backbone_args": {"hidden": [32]}},
    "robustness": {"corruptions": ["fog", "shot_noise"], "severities": [1, 5], "images": 100, "after": "every"},
    "strategies": {"naive": {}, "ncm": {}},
}


def run(tmp_path, protocol, out="out"):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(protocol))
    assert main(["run", str(path), "--out", str(tmp_path / out), "--quiet"]) == 0
    return tmp_path / out


def test_robustness_csv_per_cell_with_the_documented_columns(tmp_path):
    out = run(tmp_path, PROTOCOL)
    for strategy in ("naive", "ncm"):
        df = pd.read_csv(out / strategy / "seed0" / "robustness.csv")
        assert list(df.columns) == ROBUSTNESS_COLUMNS
        assert len(df) == 5 * (1 + 2 * 2)  # every experience x (clean + corruptions x severities)
        assert set(df["corruption"]) == {"none", "fog", "shot_noise"} and set(df["severity"]) == {0, 1, 5}
        clean = df[df["severity"] == 0]
        assert clean["corruption"].tolist() == ["none"] * 5
        assert df["accuracy"].between(0, 1).all()
        metrics = pd.read_json(out / strategy / "seed0" / "metrics.json", typ="series")
        final = df[(df["train_exp"] == 4) & (df["severity"] > 0)]["accuracy"].mean()
        assert metrics["robust_accuracy"] == pytest.approx(final) and metrics["robustness_seconds"] > 0
        assert metrics["robust_clean_accuracy"] == pytest.approx(clean["accuracy"].iloc[-1])
    data = read_run(out)
    assert len(data.robustness) == 2 * 25 and {"run", "order", "cell"} <= set(data.robustness.columns)
    # final only: one row per corruption and severity, the same numbers as the final rows above
    final_only = run(tmp_path, {**PROTOCOL, "robustness": {**PROTOCOL["robustness"], "after": "final"}}, "final")
    a = pd.read_csv(final_only / "ncm" / "seed0" / "robustness.csv")
    b = pd.read_csv(out / "ncm" / "seed0" / "robustness.csv")
    assert a["train_exp"].tolist() == [4] * 5
    assert a.drop(columns="protocol").equals(b[b["train_exp"] == 4].drop(columns="protocol").reset_index(drop=True))


def test_summarize_shows_accuracy_under_corruption_only_where_a_run_has_it(tmp_path, capsys):
    out = run(tmp_path, {**PROTOCOL, "robustness": {**PROTOCOL["robustness"], "after": "final"}})
    plain = run(tmp_path, {k: v for k, v in PROTOCOL.items() if k != "robustness"}, "plain")
    capsys.readouterr()
    assert main(["summarize", str(out), "--format", "markdown", "--no-inference"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(header, [c.strip() for c in next(x for x in lines if "| ncm |" in x).strip("|").split("|")]))
    final = pd.read_csv(out / "ncm" / "seed0" / "robustness.csv")["accuracy"]
    assert row["under corruption (%)"] == f"{100 * final[1:].mean():.2f}"  # row 0: the clean images
    assert main(["summarize", str(plain), "--no-inference"]) == 0
    assert "under corruption" not in capsys.readouterr().out


def test_the_subset_is_fixed_and_class_balanced():
    ds = load_dataset("digits")
    a, b = robustness_subset(ds, 100, seed=0), robustness_subset(ds, 100, seed=0)
    assert np.array_equal(a, b) and not np.array_equal(a, robustness_subset(ds, 100, seed=1))
    assert np.bincount(ds.y_test[a], minlength=10).tolist() == [10] * 10


@pytest.mark.parametrize("robustness, fragment", [
    ({"corruptions": ["fgo"]}, "robustness.corruptions: unknown corruption 'fgo'"),
    ({"severities": [0, 7]}, "robustness.severities: give severities from [1, 2, 3, 4, 5]"),
    ({"images": 0}, "robustness.images must be >= 1"),
    ({"after": "sometimes"}, "robustness.after: expected one of 'final', 'every'"),
    ({"corrupt": "all"}, "robustness: unknown key 'corrupt'"),
])
def test_bad_robustness_settings_fail_when_the_protocol_loads(robustness, fragment):
    with pytest.raises(UserError) as exc:
        protocol_from_dict({**PROTOCOL, "robustness": robustness})
    assert fragment in str(exc.value)


def test_a_robustness_protocol_draws_its_figures_and_reports_the_comparison(tmp_path):
    protocol = {**PROTOCOL, "robustness": {**PROTOCOL["robustness"], "after": "final"},
                "strategies": {"ncm": {}, "vae_gc": {"iterations": 30, "importance_samples": 5}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(protocol))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--plot"]) == 0
    figures = tmp_path / "out" / "figures"
    for name in ("robustness_severity.png", "robustness_drop.png"):
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Robustness" in report and "Generative classifiers (vae_gc) lose" in report
    assert "discriminative ones (ncm)" in report


def test_the_reports_comparison_leaves_out_models_near_chance():
    import pandas as pd

    from cil.report.report import _robustness_sentence

    table = pd.DataFrame({"strategy": ["naive", "cumulative", "varc"], "generative": [False, False, True],
                          "clean": [0.20, 0.98, 0.98], "corrupted": [0.16, 0.62, 0.58]})
    table["drop"] = table["clean"] - table["corrupted"]
    sentence = _robustness_sentence(table)
    assert "Generative classifiers (varc) lose 40.0 points on average, discriminative ones (cumulative) 36.0" \
        in sentence and "left out: naive" in sentence
