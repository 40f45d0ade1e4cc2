"""Strategies registered by name; hyperparameters are the builder's keyword-only arguments.

A strategy is one function, in one file of this package (or in a plugin package exposed
through the ``cil.strategies`` entry-point group), decorated with :func:`register`:

    @register("ewc", help="Elastic Weight Consolidation (Kirkpatrick et al. 2017)")
    def build_ewc(ctx: StrategyContext, *, ewc_lambda: float = 1.0) -> "SupervisedTemplate":
        from avalanche.training import EWC
        return EWC(**ctx.template_kwargs(ctx.make_model()), ewc_lambda=ewc_lambda)

(the return hint is resolved at registration: import the name under ``TYPE_CHECKING`` and
bind it to ``Any`` otherwise, as the built-in strategy files do.)

The keyword-only parameters, with their type hints and defaults, are the strategy's YAML
keys: unknown keys and values of the wrong type are errors (see :func:`validate_params`).
Builders import avalanche inside their body so that listing strategies stays instant.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from cil.config import TRAINING_OVERRIDES, TrainingConfig
from cil.errors import UserError
from cil.typecheck import coerce

ENTRY_POINT_GROUP = "cil.strategies"


@dataclass(frozen=True)
class StrategyContext:
    """Everything a builder needs that does not depend on the strategy itself.

    ``training`` is the entry's resolved training settings (the protocol's ``training:``
    section with the entry's overrides); the properties below read from it, so every default
    has one source (:class:`cil.config.TrainingConfig`).
    """

    n_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    device: Any = "cpu"  # torch.device
    seed: int = 0
    evaluator: Any = None  # avalanche EvaluationPlugin
    plugins: tuple = ()  # every strategy takes these (evaluation)
    epoch_plugins: tuple = ()  # these watch Avalanche's SGD loop: only for strategies that run it
    progress: bool = True
    name: str = ""  # the protocol's name for this entry (e.g. replay_500), for messages

    backbone = property(lambda self: self.training.backbone)
    backbone_args = property(lambda self: dict(self.training.backbone_args))
    optimizer = property(lambda self: self.training.optimizer)
    lr = property(lambda self: self.training.lr)
    weight_decay = property(lambda self: self.training.weight_decay)
    momentum = property(lambda self: self.training.momentum)
    train_mb_size = property(lambda self: self.training.train_mb_size)
    eval_mb_size = property(lambda self: self.training.eval_mb_size)
    train_epochs = property(lambda self: self.training.epochs)

    def with_training(self, **changes: Any) -> "StrategyContext":
        """This context with some training settings changed, e.g. ``ctx.with_training(lr=ctx.lr / 10)``."""
        import dataclasses

        return dataclasses.replace(self, training=dataclasses.replace(self.training, **changes))

    def make_model(self):
        """The protocol's discriminative backbone, freshly initialised."""
        from cil.models import build_backbone

        return build_backbone(self.backbone, n_classes=self.n_classes, image_shape=self.image_shape,
                              **self.backbone_args)

    def make_optimizer(self, model):
        """Adam or SGD over ``model``'s parameters, as the protocol says."""
        import torch

        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay)
        raise UserError(f"unknown optimizer {self.optimizer!r}; choose adam or sgd")

    def template_kwargs(self, model, optimizer=None, criterion=None) -> dict:
        """Keyword arguments shared by every avalanche SupervisedTemplate subclass."""
        import torch

        return dict(
            model=model,
            optimizer=optimizer if optimizer is not None else self.make_optimizer(model),
            criterion=criterion if criterion is not None else torch.nn.CrossEntropyLoss(),
            train_mb_size=self.train_mb_size,
            train_epochs=self.train_epochs,
            eval_mb_size=self.eval_mb_size,
            device=self.device,
            plugins=[*self.plugins, *self.epoch_plugins] or None,
            evaluator=self.evaluator,
        )


Builder = Callable[..., Any]


@dataclass(frozen=True)
class Param:
    name: str
    type: Any
    default: Any


# check(params, where=..., image_shape=...): settings a type hint cannot express (nested
# mappings, combinations of keys). Called with image_shape=None when the protocol is loaded,
# and again with the dataset's (C, H, W) before the first cell trains; raises UserError.
Check = Callable[..., None]


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy and what it declares: its keys (``params``), extra checks, and
    which of the protocol's training settings it uses (an entry that overrides another one is
    an error: the setting would be recorded but ignored)."""

    name: str
    builder: Builder
    help: str
    params: dict[str, Param]
    module: str
    check: Check | None = None
    uses_training: tuple[str, ...] = TRAINING_OVERRIDES
    cost: float = 1.0


_REGISTRY: dict[str, StrategySpec] = {}
_discovered = False


def register(name: str, *, help: str = "", check: Check | None = None,
             uses_training: tuple[str, ...] = TRAINING_OVERRIDES, cost: float = 1.0) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as strategy ``name``.

    ``check`` validates what the parameters' type hints cannot (see :data:`Check`); bounds on
    numbers go in the hints themselves (``cil.typecheck.PositiveInt`` and friends).
    ``uses_training`` names the training settings (``cil.config.TrainingConfig`` fields) the
    strategy reads: all of them for an SGD strategy, e.g. only ``eval_mb_size`` for one that
    returns a :class:`cil.strategies.base.ScoreClassifier`.
    ``cost`` is a rough guess of one cell's time relative to ``naive`` on the same protocol. It
    decides only the order in which a parallel run starts cells (the costliest first, so that a
    long cell does not start last while the other workers idle); results never depend on it."""
    unknown = sorted(set(uses_training) - set(TRAINING_OVERRIDES))
    if unknown:
        raise ValueError(f"strategy {name!r}: uses_training names unknown settings {unknown}")
    if not (isinstance(cost, (int, float)) and cost > 0):
        raise ValueError(f"strategy {name!r}: cost must be a positive number, got {cost!r}")

    def deco(builder: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"strategy {name!r} registered twice ({_REGISTRY[name].module}, {builder.__module__})")
        hints = typing.get_type_hints(builder, include_extras=True)
        params = {}
        for p in inspect.signature(builder).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                if p.default is inspect.Parameter.empty:
                    raise ValueError(f"strategy {name!r}: parameter {p.name!r} needs a default")
                if p.name not in hints:
                    raise ValueError(f"strategy {name!r}: parameter {p.name!r} needs a type hint (e.g. int, "
                                     "float, str, list[int]; cil.typecheck.PositiveInt for bounds): the YAML "
                                     "value is checked against it")
                params[p.name] = Param(p.name, hints[p.name], p.default)
        doc = help or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = StrategySpec(name, builder, doc, params, builder.__module__, check, tuple(uses_training),
                                       float(cost))
        return builder

    return deco


def _discover() -> None:
    """Import every module of this package and every ``cil.strategies`` entry point once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module("cil.strategies")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry" and not info.name.startswith("_"):
            importlib.import_module(f"cil.strategies.{info.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()  # loading the module runs its @register decorators
        except Exception as exc:  # a broken plugin must not hide the built-in strategies
            raise UserError(f"strategy plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc


def available() -> list[str]:
    """Names of all registered strategies, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> StrategySpec:
    """The spec registered as ``name``; UserError listing the choices if there is none."""
    _discover()
    if name not in _REGISTRY:
        raise UserError(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def validate_params(name: str, given: dict | None, *, where: str | None = None,
                    image_shape: tuple[int, int, int] | None = None) -> dict:
    """Check a strategy's YAML keys, value types and bounds, and its own ``check`` (with the
    dataset's image shape when known); return the settings with defaults filled in."""
    spec = get(name)
    where = where or f"strategies.{name}"
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        allowed = ", ".join(spec.params) or "(none)"
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {allowed}")
    out = {}
    for pname, param in spec.params.items():
        if pname in given:
            out[pname] = coerce(given[pname], param.type, f"{where}.{pname}")
        else:
            out[pname] = param.default
    if spec.check is not None:
        spec.check(out, where=where, image_shape=image_shape)
    return out


def build(name: str, ctx: StrategyContext, params: dict | None = None):
    """Validate ``params`` and call the builder; a :class:`~cil.strategies.base.ScoreClassifier`
    comes back wrapped for Avalanche's evaluation loop. Returns a strategy with ``train`` and
    ``eval``, or a one-line error naming what the builder returned instead."""
    from cil.strategies.base import ScoreClassifier, as_avalanche

    spec = get(name)
    made = spec.builder(ctx, **validate_params(name, params, where=f"strategies.{ctx.name or name}"))
    if isinstance(made, ScoreClassifier):
        return as_avalanche(ctx, made)
    from avalanche.training.templates import BaseTemplate

    if not isinstance(made, BaseTemplate):
        raise UserError(f"strategy {ctx.name or name!r} ({spec.module}): the builder returned "
                        f"{type(made).__name__}; expected an Avalanche strategy (a SupervisedTemplate or another "
                        "avalanche.training.templates.BaseTemplate) or a cil.strategies.base.ScoreClassifier")
    if any(p not in made.plugins for p in ctx.plugins):
        raise UserError(f"strategy {ctx.name or name!r} ({spec.module}) does not apply the runner's plugins "
                        "(ctx.plugins: evaluation, task-incremental masking); pass them to the template, e.g. "
                        "with ctx.template_kwargs(model)")
    return made
