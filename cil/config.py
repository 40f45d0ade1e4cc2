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
from typing import Any, Literal

from cil.errors import UserError
from cil.typecheck import PositiveFloat, check_keys, coerce


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """How the dataset's classes are split into experiences."""

    n_experiences: int | None = 5
    classes_per_exp: int | None = None
    first_exp_classes: int | None = None
    class_order: str | list[int] = "natural"  # natural | shuffled | explicit list
    class_order_seed: int = 0
    # Several class orders as a grid axis: each item is natural, a seed (a shuffled order drawn
    # from it) or an explicit list; replaces class_order/class_order_seed when given.
    class_orders: list[str | int | list[int]] | None = None
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
class RobustnessConfig:
    """An extra evaluation of every cell's model on corrupted copies of a fixed, class-balanced
    subset of the test set (``cil.robustness``, after MNIST-C): after the last experience, or
    after every one (forgetting under shift). The same images for every strategy and seed."""

    corruptions: str | list[str] = "all"  # "all", "fog,zigzag" or a list of names
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    after: Literal["final", "every"] = "final"
    images: int = 1000  # per corruption and severity, split evenly over the classes
    seed: int = 0  # which test images, and the corruptions' randomness


@dataclass(frozen=True, kw_only=True)
class StrategyEntry:
    """One strategy of a protocol: a display name, the registered builder and its settings.

    ``resources`` is what one of its cells asks of a Ray cluster (``cpus``, ``gpus``; fractions
    of a GPU allowed); empty means the protocol's threads and, on CUDA, one GPU.
    """

    name: str
    strategy: str
    params: dict
    training: TrainingConfig
    resources: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ClassOrder:
    """One class order of the grid: a short label (folder names, tables) and how to draw it."""

    label: str  # natural | order<seed> | custom<i>
    order: str | list[int]  # natural | shuffled | explicit list
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One (strategy, training seed, class order) cell of the grid."""

    entry: StrategyEntry
    seed: int
    order: ClassOrder

    @property
    def label(self) -> str:
        """``replay_500 seed 1 order1``: how progress lines and errors name the cell."""
        return f"{self.entry.name} seed {self.seed} {self.order.label}"


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
    pairing: str = "crossed"  # crossed: every seed with every class order; paired: seed k with order k
    robustness: RobustnessConfig | None = None
    loggers: list[str] = field(default_factory=list)  # tensorboard | csv | wandb, per cell under <cell>/logs
    # The class order whose cells live in plain ``seed<k>`` folders: the file's single
    # ``stream.class_order`` (kept when ``cil run --orders`` replaces it); None when the file
    # lists ``class_orders``. Not a setting: it decides folder names, never numbers.
    plain_order: str | None = None

    def entry(self, name: str) -> StrategyEntry:
        for e in self.strategies:
            if e.name == name:
                return e
        raise KeyError(name)

    def class_orders(self) -> list[ClassOrder]:
        """The class orders of the grid (one, unless ``stream.class_orders`` lists several)."""
        return _stream_orders(self.stream)

    def folder_order(self, cell: Cell) -> str | None:
        """The class order in the cell's folder name and label: None for the file's single class
        order (``seed<k>``), its label otherwise (``seed<k>_<order>``). A cell has one folder
        however the run names its orders (the file's list or ``cil run --orders``), so a run of
        part of a grid writes where the whole grid's run looks."""
        return None if cell.order.label == self.plain_order else cell.order.label

    def cell_name(self, cell: Cell) -> str:
        """How logs name a cell: with its class order where its folder names one."""
        return cell.label if self.folder_order(cell) else f"{cell.entry.name} seed {cell.seed}"

    def cells(self) -> list[Cell]:
        """Every cell of the grid: seeds x class orders (crossed) or pairwise (paired), each with
        every strategy, in the order a serial run takes them."""
        orders = self.class_orders()
        pairs = (list(zip(self.seeds, orders)) if self.pairing == "paired"
                 else [(seed, order) for seed in self.seeds for order in orders])
        return [Cell(entry=e, seed=seed, order=order) for seed, order in pairs for e in self.strategies]

    def for_cell(self, cell: Cell) -> "Protocol":
        """This protocol narrowed to one cell: its strategy and its class order (what the cell's
        config.yaml records, and what decides its numbers)."""
        stream = dataclasses.replace(self.stream, class_order=cell.order.order, class_order_seed=cell.order.seed,
                                     class_orders=None)
        return dataclasses.replace(self, stream=stream, strategies=[cell.entry])


def _stream_orders(s: StreamConfig) -> list[ClassOrder]:
    """The class orders a stream section names: its list, or its single order."""
    if s.class_orders is None:
        return [_class_order(s.class_order, s.class_order_seed, 0)]
    return [_class_order("shuffled" if isinstance(o, int) else o, o if isinstance(o, int) else 0, i)
            for i, o in enumerate(s.class_orders)]


def _plain_order(s: StreamConfig) -> str | None:
    """The label of a stream section's single class order (None when it lists several)."""
    return _stream_orders(s)[0].label if s.class_orders is None else None


def _class_order(order: str | list[int], seed: int, index: int) -> ClassOrder:
    if isinstance(order, list):
        return ClassOrder(label=f"custom{index}", order=list(order), seed=0)
    if order == "natural":
        return ClassOrder(label="natural", order="natural", seed=0)
    if order == "shuffled":
        return ClassOrder(label=f"order{seed}", order="shuffled", seed=seed)
    raise UserError(f"stream.class_orders[{index}]: expected natural, a seed (int) or a list of class ids, "
                    f"got {order!r}")


TOP_KEYS = ("name", "description", "dataset", "data_root", "stream", "training", "seeds", "device", "threads",
            "pairing", "robustness", "loggers", "strategies")
ENTRY_KEYS = ("strategy", "resources")  # what an entry may hold besides the strategy's own keys and overrides
RESOURCE_KEYS = ("cpus", "gpus")


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
    pairing = coerce(raw.get("pairing", "crossed"), Literal["crossed", "paired"], "pairing")
    if stream.class_orders is not None:
        raw_stream = raw.get("stream") or {}
        both = [k for k in ("class_order", "class_order_seed") if k in raw_stream]
        if both:
            raise UserError(f"stream: give class_orders or {' and '.join(both)}, not both")
        if not stream.class_orders:
            raise UserError("stream.class_orders: give at least one class order, e.g. [natural, 1, 2]")
        for i, o in enumerate(stream.class_orders):
            if (isinstance(o, str) and o != "natural") or (isinstance(o, int) and o < 0):
                raise UserError(f"stream.class_orders[{i}]: expected natural, a seed (int >= 0) or a list of "
                                f"class ids, got {o!r}")
        labels = [o.label for o in _stream_orders(stream)]
        twice = next((x for x in labels if labels.count(x) > 1), None)
        if twice is not None:
            raise UserError(f"stream.class_orders: {twice} is listed twice; list each class order once")
    twice = next((x for x in seeds if seeds.count(x) > 1), None)
    if twice is not None and pairing == "crossed":
        raise UserError(f"seeds: {twice} is listed twice; list each training seed once")
    n_orders = len(stream.class_orders or [None])
    if pairing == "paired" and n_orders != len(seeds):
        raise UserError(f"pairing: paired needs as many seeds as class orders, got {len(seeds)} seeds and "
                        f"{n_orders} class orders; give equally many (cil run: --seeds and --orders) or use pairing: crossed")
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
        resources = check_keys(settings.pop("resources", None), RESOURCE_KEYS, f"{where}.resources")
        resources = {k: coerce(v, PositiveFloat, f"{where}.resources.{k}") for k, v in resources.items()}
        overrides = {k: settings.pop(k) for k in list(settings) if k in TRAINING_OVERRIDES}
        spec = registry.get(builder)
        ignored = [k for k in overrides if k not in spec.uses_training]
        if ignored:
            uses = ", ".join(spec.uses_training) or "none"
            raise UserError(f"{where}.{ignored[0]}: strategy {builder!r} does not use the training setting "
                            f"{ignored[0]!r} (it uses: {uses}); remove it")
        base = dataclasses.asdict(training)
        t_cfg = _build(TrainingConfig, {**base, **overrides}, where)
        _training_errors(t_cfg, where)
        unknown = [k for k in settings if k not in spec.params]
        if unknown:
            allowed = ", ".join(list(spec.params) + list(ENTRY_KEYS) + list(spec.uses_training))
            raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {allowed}")
        params = registry.validate_params(builder, settings, where=where)
        entries.append(StrategyEntry(name=str(name), strategy=builder, params=params, training=t_cfg,
                                     resources=resources))
    robustness = None
    if raw.get("robustness") is not None:
        robustness = _build(RobustnessConfig, raw["robustness"], "robustness")
        _robustness_errors(robustness)
    from cil.loggers import check_loggers

    loggers = coerce(raw.get("loggers", []), list[str], "loggers")
    check_loggers(loggers)
    name = coerce(raw.get("name", default_name), str, "name")
    return Protocol(name=name, description=coerce(raw.get("description", ""), str, "description"),
                    dataset=coerce(raw.get("dataset", "digits"), str, "dataset"),
                    data_root=coerce(raw.get("data_root"), str | None, "data_root"),
                    stream=stream, training=training, seeds=seeds, device=device, threads=threads,
                    strategies=entries, pairing=pairing, robustness=robustness, loggers=loggers,
                    plain_order=_plain_order(stream))


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


def _robustness_errors(r: RobustnessConfig) -> None:
    from cil.robustness import SEVERITIES, expand_corruptions

    try:
        expand_corruptions(r.corruptions)
    except ValueError as exc:
        raise UserError(f"robustness.corruptions: {exc}") from None
    if not r.severities or any(s not in SEVERITIES for s in r.severities):
        raise UserError(f"robustness.severities: give severities from {list(SEVERITIES)}, got {r.severities}")
    if r.images < 1:
        raise UserError(f"robustness.images must be >= 1, got {r.images}")


def field_overrides(items: list[str]) -> dict[str, Any]:
    """``["width=128", "patch_nums=[1,2,4]"]`` -> {"width": 128, "patch_nums": (1, 2, 4)}: flat
    ``--set FIELD=VALUE`` options (the VAR model's), parsed like the protocol's overrides."""
    out: dict[str, Any] = {}
    for item in items:
        path, value = parse_override(item) if "=" in item else ([], None)
        if len(path) != 1:
            raise UserError(f"--set {item!r}: write FIELD=VALUE with one field name, e.g. width=128")
        out[path[0]] = tuple(value) if isinstance(value, list) else value
    return out


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
    """Where the shipped protocol files live: the repository's ``benchmarks/`` in a source
    checkout (an editable install), else the copy a regular install puts under
    ``<prefix>/share/varc-cil/protocols`` (setup.cfg's data_files)."""
    import sys

    source = Path(__file__).resolve().parent.parent
    if (source / "setup.cfg").is_file() and (source / "benchmarks").is_dir():
        return source / "benchmarks"
    return Path(sys.prefix) / "share" / "varc-cil" / "protocols"


def list_protocols() -> list[Path]:
    d = protocols_dir()
    return sorted(d.glob("*.yaml")) if d.is_dir() else []


def load_protocol(name_or_path: str, *, overrides: list[str] | None = None,
                  class_orders: list[str | int] | None = None) -> tuple[Protocol, dict]:
    """Read, override and validate a protocol; returns it with the raw (overridden) mapping.

    ``class_orders`` (``cil run --orders``) replaces the stream's class order(s), whichever
    way the file gives them."""
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
    if class_orders is None:
        return protocol_from_dict(raw, default_name=path.stem), raw
    set_order = [k for k in ("class_order", "class_order_seed", "class_orders")
                 if any(o.split("=", 1)[0].strip() == f"stream.{k}" for o in overrides or [])]
    if set_order:
        raise UserError(f"--orders replaces the protocol's class orders; drop --set stream.{set_order[0]}=... "
                        "(or --orders)")
    plain = _plain_order(_build(StreamConfig, raw.get("stream"), "stream"))  # the file's own single order
    stream = {k: v for k, v in (raw.get("stream") or {}).items() if k not in ("class_order", "class_order_seed")}
    raw = {**raw, "stream": {**stream, "class_orders": list(class_orders)}}
    return dataclasses.replace(protocol_from_dict(raw, default_name=path.stem), plain_order=plain), raw


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
        "seeds": list(p.seeds), "device": p.device, "threads": p.threads, "pairing": p.pairing, "strategies": {},
    }
    if p.robustness is not None:
        out["robustness"] = dataclasses.asdict(p.robustness)
    if p.loggers:
        out["loggers"] = list(p.loggers)
    for e in p.strategies:
        entry: dict[str, Any] = {"strategy": e.strategy, **e.params}
        if e.resources:
            entry["resources"] = dict(e.resources)
        for k, v in dataclasses.asdict(e.training).items():
            if v != out["training"][k]:
                entry[k] = v
        out["strategies"][e.name] = entry
    return out
