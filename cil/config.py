"""Protocol files: YAML -> typed, validated dataclasses.

Unknown keys are errors that name the key and list the allowed ones (as in FACIL);
values are checked against the dataclass type hints; ``--set a.b.c=VALUE`` overrides are
applied to the raw YAML before validation, so they are checked the same way.

A protocol names its strategies in a mapping; each entry's keys are the strategy's own
hyperparameters plus the per-strategy training overrides in ``TRAINING_OVERRIDES``.
``strategy:`` picks the registered builder when the entry's name is an alias, so one
protocol can hold ``replay_200`` and ``replay_500``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cil.errors import UserError
from cil.typecheck import check_keys, coerce


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """How the dataset's classes are split into experiences."""

    n_experiences: int | None = 5
    classes_per_exp: int | None = None
    first_exp_classes: int | None = None
    class_order: str | list[int] = "natural"  # natural | shuffled | explicit list
    class_order_seed: int = 0
    task_incremental: bool = False


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Shared training settings of the discriminative baselines (each strategy may override)."""

    backbone: str = "mlp"
    backbone_args: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    epochs: int = 1
    train_mb_size: int = 64
    eval_mb_size: int = 256


TRAINING_OVERRIDES = tuple(f.name for f in dataclasses.fields(TrainingConfig))


@dataclass(frozen=True, kw_only=True)
class StrategyEntry:
    """One strategy of a protocol: a display name, the registered builder and its settings."""

    name: str
    strategy: str
    params: dict
    training: TrainingConfig


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """A complete class-incremental protocol, as read from a YAML file."""

    name: str
    dataset: str = "digits"
    data_root: str | None = None
    stream: StreamConfig = field(default_factory=StreamConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    threads: int = 1
    strategies: list[StrategyEntry] = field(default_factory=list)
    description: str = ""

    def entry(self, name: str) -> StrategyEntry:
        for e in self.strategies:
            if e.name == name:
                return e
        raise KeyError(name)


TOP_KEYS = ("name", "description", "dataset", "data_root", "stream", "training", "seeds", "device", "threads",
            "strategies")


def _build(cls: type, data: Any, where: str) -> Any:
    """Validate a mapping into a flat dataclass of simple fields."""
    names = [f.name for f in dataclasses.fields(cls)]
    data = check_keys(data, names, where)
    hints = typing.get_type_hints(cls)
    return cls(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def _training_errors(t: TrainingConfig, where: str) -> None:
    if t.epochs < 1:
        raise UserError(f"{where}.epochs must be >= 1, got {t.epochs}")
    if t.train_mb_size < 1 or t.eval_mb_size < 1:
        raise UserError(f"{where}: batch sizes must be >= 1")
    if t.lr <= 0:
        raise UserError(f"{where}.lr must be > 0, got {t.lr}")
    if t.optimizer not in ("adam", "sgd"):
        raise UserError(f"{where}.optimizer: expected 'adam' or 'sgd', got {t.optimizer!r}")


def protocol_from_dict(raw: Any, *, default_name: str = "protocol") -> Protocol:
    """Validate a parsed YAML document into a Protocol (strategy keys checked by the registry)."""
    from cil.strategies import registry

    raw = check_keys(raw, TOP_KEYS, "protocol")
    stream = _build(StreamConfig, raw.get("stream"), "stream")
    training = _build(TrainingConfig, raw.get("training"), "training")
    _training_errors(training, "training")
    seeds = coerce(raw.get("seeds", [0]), list[int], "seeds")
    if not seeds:
        raise UserError("seeds: give at least one training seed, e.g. [0]")
    device = coerce(raw.get("device", "auto"), str, "device")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    threads = coerce(raw.get("threads", 1), int, "threads")
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    strategies_raw = raw.get("strategies")
    if not isinstance(strategies_raw, dict) or not strategies_raw:
        raise UserError("strategies: expected a mapping of strategy names to settings, e.g. {naive: {}, ewc: "
                        "{ewc_lambda: 1000}}")
    entries = []
    for name, settings in strategies_raw.items():
        where = f"strategies.{name}"
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise UserError(f"{where}: expected a mapping of settings (or {{}}), got {settings!r}")
        settings = dict(settings)
        builder = coerce(settings.pop("strategy", name), str, f"{where}.strategy")
        overrides = {k: settings.pop(k) for k in list(settings) if k in TRAINING_OVERRIDES}
        base = dataclasses.asdict(training)
        t_cfg = _build(TrainingConfig, {**base, **overrides}, where)
        _training_errors(t_cfg, where)
        spec = registry.get(builder)
        unknown = [k for k in settings if k not in spec.params]
        if unknown:
            allowed = ", ".join(list(spec.params) + ["strategy"] + list(TRAINING_OVERRIDES))
            raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {allowed}")
        params = registry.validate_params(builder, settings, where=where)
        entries.append(StrategyEntry(name=str(name), strategy=builder, params=params, training=t_cfg))
    name = coerce(raw.get("name", default_name), str, "name")
    return Protocol(name=name, description=coerce(raw.get("description", ""), str, "description"),
                    dataset=coerce(raw.get("dataset", "digits"), str, "dataset"),
                    data_root=coerce(raw.get("data_root"), str | None, "data_root"),
                    stream=stream, training=training, seeds=seeds, device=device, threads=threads,
                    strategies=entries)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` -> (['a', 'b', 'c'], VALUE parsed as YAML)."""
    import yaml

    if "=" not in text:
        raise UserError(f"--set expects KEY.PATH=VALUE, e.g. strategies.ewc.ewc_lambda=100; got {text!r}")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise UserError(f"--set: bad key path {key!r}; use dots between names, e.g. training.epochs=2")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return path, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``--set`` overrides to the raw YAML mapping (creating mappings along the path)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {text}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
    return raw


def find_protocol_file(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a protocol shipped in benchmarks/."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = protocols_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    choices = ", ".join(p.stem for p in list_protocols()) or "(none found)"
    raise UserError(f"protocol {name_or_path!r} not found: give a YAML file path or one of: {choices}")


def protocols_dir() -> Path:
    """The repository's benchmarks/ folder, where the shipped protocol files live."""
    return Path(__file__).resolve().parent.parent / "benchmarks"


def list_protocols() -> list[Path]:
    d = protocols_dir()
    return sorted(d.glob("*.yaml")) if d.is_dir() else []


def load_protocol(name_or_path: str, *, overrides: list[str] | None = None) -> tuple[Protocol, dict]:
    """Read, override and validate a protocol; returns it with the raw (overridden) mapping."""
    import yaml

    path = find_protocol_file(name_or_path)
    try:
        raw = load_yaml_strict(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read protocol file {path}: {exc}") from exc
    except UserError as exc:
        raise UserError(f"protocol file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"protocol file {path} is not valid YAML: {first}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"protocol file {path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    return protocol_from_dict(raw, default_name=path.stem), raw


def load_yaml_strict(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping (plain YAML keeps the
    last one silently, so a protocol could say two things and mean one)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise UserError(f"key {key!r} appears twice in one mapping (lines {seen[key]} and "
                                f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def resolved_dict(p: Protocol) -> dict:
    """The protocol with every default filled in, as plain YAML-ready data."""
    out = {
        "name": p.name, "description": p.description, "dataset": p.dataset, "data_root": p.data_root,
        "stream": dataclasses.asdict(p.stream), "training": dataclasses.asdict(p.training),
        "seeds": list(p.seeds), "device": p.device, "threads": p.threads, "strategies": {},
    }
    for e in p.strategies:
        entry: dict[str, Any] = {"strategy": e.strategy, **e.params}
        for k, v in dataclasses.asdict(e.training).items():
            if v != out["training"][k]:
                entry[k] = v
        out["strategies"][e.name] = entry
    return out
