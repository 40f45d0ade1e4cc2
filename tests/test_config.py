"""Protocol validation: strict keys, types, overrides, aliases, shipped protocols."""

import pytest
import yaml

from cil.config import apply_overrides, list_protocols, load_protocol, protocol_from_dict, resolved_dict
from cil.errors import UserError

BASE = {
    "name": "t", "dataset": "digits",
    "stream": {"n_experiences": 5},
    "training": {"epochs": 2, "lr": 0.01},
    "strategies": {"naive": {}, "ewc": {"ewc_lambda": 10}, "replay_50": {"strategy": "replay", "mem_size": 50,
                                                                          "epochs": 3}},
}


def test_valid_protocol_fills_defaults_and_aliases():
    p = protocol_from_dict(BASE)
    assert [e.name for e in p.strategies] == ["naive", "ewc", "replay_50"]
    ewc = p.entry("ewc")
    assert ewc.params["ewc_lambda"] == 10.0 and isinstance(ewc.params["ewc_lambda"], float)
    assert "mode" in ewc.params  # default filled in
    replay = p.entry("replay_50")
    assert replay.strategy == "replay" and replay.params["mem_size"] == 50
    assert replay.training.epochs == 3 and p.entry("naive").training.epochs == 2
    assert p.seeds == [0] and p.device == "auto"
    again = protocol_from_dict(resolved_dict(p))
    assert again == p


@pytest.mark.parametrize("patch, fragment", [
    ({"bogus": 1}, "unknown key 'bogus'; allowed keys: name"),
    ({"stream": {"n_exp": 5}}, "stream: unknown key 'n_exp'; allowed keys: n_experiences"),
    ({"training": {"epochs": "ten"}}, "training.epochs: expected int, got 'ten'"),
    ({"training": {"epochs": 0}}, "epochs must be >= 1"),
    ({"training": {"optimizer": "rmsprop"}}, "expected 'adam' or 'sgd'"),
    ({"strategies": {"nope": {}}}, "unknown strategy 'nope'; choose one of:"),
    ({"strategies": {"ewc": {"lambda": 3}}}, "strategies.ewc: unknown key 'lambda'; allowed keys: ewc_lambda"),
    ({"strategies": {"ewc": {"ewc_lambda": "big"}}}, "strategies.ewc.ewc_lambda: expected float"),
    ({"strategies": {"replay": {"mem_size": 2.5}}}, "strategies.replay.mem_size: expected int"),
    ({"strategies": {}}, "strategies: expected a mapping"),
    ({"seeds": "zero"}, "seeds: expected a list"),
    ({"device": "tpu"}, "device: expected auto, cpu, cuda"),
    ({"seeds": [0, 1, 0]}, "seeds: 0 is listed twice; list each training seed once"),
    ({"stream": {"class_orders": ["natural", 1, 1]}}, "stream.class_orders: order1 is listed twice"),
    ({"stream": {"class_orders": [-1]}}, "stream.class_orders[0]: expected natural, a seed (int >= 0)"),
])
def test_bad_values_are_one_line_user_errors(patch, fragment):
    raw = {**BASE, **patch}
    with pytest.raises(UserError) as exc:
        protocol_from_dict(raw)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_overrides_are_parsed_as_yaml_and_validated():
    raw = apply_overrides(yaml.safe_load(yaml.safe_dump(BASE)),
                          ["strategies.ewc.ewc_lambda=100", "seeds=[0, 1, 2]", "training.epochs=5"])
    p = protocol_from_dict(raw)
    assert p.entry("ewc").params["ewc_lambda"] == 100.0
    assert p.seeds == [0, 1, 2] and p.training.epochs == 5
    with pytest.raises(UserError, match="unknown key 'ewc_lamda'"):
        protocol_from_dict(apply_overrides(dict(BASE, strategies={"ewc": {}}), ["strategies.ewc.ewc_lamda=1"]))
    with pytest.raises(UserError, match="KEY.PATH=VALUE"):
        apply_overrides({}, ["strategies.ewc.ewc_lambda"])


def test_shipped_protocols_validate():
    names = [p.stem for p in list_protocols()]
    assert "split_digits" in names and "split_mnist" in names
    for path in list_protocols():
        p, _ = load_protocol(str(path))
        assert p.strategies


def test_missing_or_malformed_protocol_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_protocol(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies: [naive\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_protocol(str(bad))


def test_no_strategy_key_shadows_a_training_override():
    """A strategy key named like a training setting (epochs, lr ...) could never be set."""
    from cil.config import TRAINING_OVERRIDES
    from cil.strategies import registry

    for name in registry.available():
        clash = set(registry.get(name).params) & set(TRAINING_OVERRIDES)
        assert not clash, f"strategy {name} has keys {clash} that the protocol reads as training overrides"
